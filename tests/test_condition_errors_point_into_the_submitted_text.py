"""A job's bad condition is reported at its column in the text the client wrote (issue 17, "Docs contradict the code").

The parser sees each stage's condition after ``$JOB`` became the job's
genesis CID (59 characters for 4), so its columns pointed past the mistake.
:func:`meshd.roles.jobs.plan_job` now maps them back, and the message names
``$JOB``, not a CID the client never wrote.
"""

from __future__ import annotations

import json

import pytest

from conditions import ConditionOptions
from lattice import codec
from meshd.errors import BadRequest
from meshd.roles.jobs import Pipeline, plan_job
from meshd.roles.pipeline import submitted_column

from ._daemons import REPO

CID = str(codec.encode_block({"genesis": 1})[0])


def _plan(condition: str) -> None:
    body = json.loads((REPO / "engines" / "examples" / "pipelines" / "fibsum.json").read_text())
    body["stages"][1]["condition"] = condition
    engines = [codec.encode_block({"engine": i})[0] for i in range(3)]
    plan_job(Pipeline.from_json_untrusted(body), codec.encode_block({"job": 1})[0], engines, created_ms=0,
             options=ConditionOptions())


def test_the_column_is_the_submitted_texts() -> None:
    text = "exist(dataset(hpcp('$JOB/split/results'))) && exist(dataset(hpcp('$JOB/x'))) &&"
    with pytest.raises(BadRequest) as refused:
        _plan(text)
    message = str(refused.value)
    assert refused.value.code == "bad_condition"
    assert f"line 1, column {len(text) + 1}" in message, message  # the end of what the client wrote
    assert "bafy" not in message


def test_an_error_inside_a_substituted_cid_points_at_its_job() -> None:
    text = "exist(dataset(hpcp('$JOB/split/results'))) && $JOB"
    substituted = text.replace("$JOB", CID)
    inside = substituted.rindex(CID) + 10 + 1  # 1-based, within the second CID
    assert submitted_column(text, CID, 1, inside) == text.rindex("$JOB") + 1


def test_columns_before_any_job_and_on_other_lines_are_unchanged() -> None:
    assert submitted_column("x &&\n$JOB", CID, 1, 3) == 3
    assert submitted_column("$JOB\n  ) (", CID, 2, 4) == 4
    assert submitted_column("a $JOB b", CID, 1, 2) == 2
    assert submitted_column("a $JOB b", CID, 1, 3 + len(CID) + 1) == 3 + 4 + 1
    assert submitted_column("", CID, 3, 7) == 7
