"""docs/protocol.md's generated section (field tables and encoded examples) is
what scripts/protocol_examples.py builds from the code today: a record change
that is not regenerated, or a hand edit inside the generated section, fails
here rather than leaving the protocol doc wrong."""

from __future__ import annotations

import subprocess
import sys

from ._daemons import REPO


def test_the_generated_section_of_protocol_md_is_current() -> None:
    out = subprocess.run([sys.executable, "scripts/protocol_examples.py", "--check", "docs/protocol.md"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
