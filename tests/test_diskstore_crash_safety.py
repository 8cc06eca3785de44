"""SIGKILL a process mid-write; every acknowledged block must survive intact.

A real child process (``tests/_diskstore_writer.py``) writes blocks in a loop
and prints each CID after the call that stored it returned.  The test reads
until it has seen a target number of acknowledgements, kills the child with
SIGKILL (which it cannot catch or clean up after), and reopens the store.
Rounds reuse the same file, so later rounds also start from a file whose log
a previous kill left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lattice.cid import CID, RAW
from lattice.diskstore import DiskBlockStore

WRITER = Path(__file__).with_name("_diskstore_writer.py")
REPO_ROOT = Path(__file__).resolve().parent.parent


def run_writer_until_killed(db: Path, seed: int, synchronous: str, acks: int) -> list[CID]:
    """Start the writer, SIGKILL it once ``acks`` CIDs are printed; return all printed CIDs."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(seed), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[bytes] = []
    try:
        # Condition, not a sleep: block on the pipe until enough acks arrived.
        while len(lines) < acks:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read().decode(errors='replace')}")
            lines.append(line)
        proc.send_signal(signal.SIGKILL)
        # Writes acknowledged between our last read and the kill count too.
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # A line cut short by the kill was never fully acknowledged: drop it.
    lines.extend(rest.splitlines(keepends=True))
    return [CID.parse_untrusted(line.decode().strip()) for line in lines if line.endswith(b"\n")]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_mid_write_never_loses_or_corrupts_acknowledged_blocks(tmp_path: Path) -> None:
    db = tmp_path / "blocks.db"
    rng = random.Random(20240611)
    acknowledged: set[CID] = set()
    for round_no, synchronous in enumerate(("full", "normal", "full", "normal", "full")):
        acks = rng.randint(200, 700)
        printed = run_writer_until_killed(db, round_no, synchronous, acks)
        assert len(printed) >= acks
        acknowledged.update(printed)

        with DiskBlockStore.open(db) as store:  # default: verify_on_get=True
            held = set(store.cids())
            missing = acknowledged - held
            assert not missing, f"round {round_no}: {len(missing)} acknowledged blocks lost"
            got = store.get_many(acknowledged)  # re-hashes every block
            assert set(got) == acknowledged
            report = store.verify()
            assert report.ok, f"round {round_no}: {report}"
            # The counter committed with the rows, so it survived the kill exactly.
            assert store.size() == len(held) == report.blocks == report.checked

            probe = CID.for_block(RAW, f"after round {round_no}".encode())
            store.put(probe, f"after round {round_no}".encode())
            assert store.get(probe) == f"after round {round_no}".encode()
            acknowledged.add(probe)
