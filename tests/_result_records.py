"""Result records as tests need them: the frozen v1 format, and v2 records in anyone's name.

:func:`lattice.results.result_record` builds only v2 records, in the name of
the key whose delta carries them.  Tests also need what old peers wrote
(signed v1 records) and what a hostile peer can write (v2 records naming
another runner).
"""

from __future__ import annotations

from typing import Any

from lattice import codec
from lattice.cid import CID
from lattice.signing import Signer


def signed_v1(signer: Signer, task: CID, output: CID, runner: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    """A v1 record, as meshd wrote them before v2: signed by ``signer`` over the record without ``s``."""
    body: dict[str, Any] = {"t": "meshd/result", "v": 1, "task": task, "output": output, "runner": runner,
                            "pk": signer.public, "at": at_ms}
    body.update(extra)
    body["s"] = signer.sign(codec.encode(body))
    return body


def v2_in_any_name(task: CID, output: CID, runner: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    """A v2 record naming ``runner``, whoever will carry it (``result_record`` refuses that)."""
    return {"t": "meshd/result", "v": 2, "task": task, "output": output, "runner": runner, "at": at_ms, **extra}
