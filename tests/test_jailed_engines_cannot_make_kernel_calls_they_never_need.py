"""Jailed native engines run under a seccomp filter (issue 14, finding 10;
``engines/seccomp.py``): ``keyctl`` (the kernel keyring is not namespaced),
which needs no privilege and works in the jail without the filter, and
``ptrace`` fail with EPERM, cold and warm; an ordinary call still works.
The same engine without the filter is the control: there the keyring
answers, so the filter is what refuses it."""

from __future__ import annotations

import platform
import sys

import pytest
import trio

from engines import NativeOptions, NativeRunner, PoolOptions, WarmPool, WorkerSpec
from engines.sandbox import jail_unavailable
from engines.seccomp import filter_unavailable

PY = sys.executable

pytestmark = [
    pytest.mark.skipif(jail_unavailable("bwrap") is not None,
                       reason=f"no jail on this machine: {jail_unavailable('bwrap')}"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe uses x86_64 system call numbers"),
    pytest.mark.skipif(filter_unavailable() is not None, reason=f"no seccomp filter: {filter_unavailable()}"),
]

#: x86_64 numbers: ptrace(PTRACE_TRACEME), keyctl(KEYCTL_GET_KEYRING_ID,
#: KEY_SPEC_PROCESS_KEYRING, create) and, for the honest part, getpid.
CALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
def probe(_=None):
    return {"ptrace": call(101, 0, 0, 0, 0), "keyctl": call(250, 0, -2, 1), "getpid": call(39),
            }
"""


async def _cold(options: NativeOptions) -> dict:
    runner = NativeRunner(options)
    outcome = await runner.run([PY, "-c", CALLS + "import json, sys; json.dump(probe(), sys.stdout)"], {})
    assert outcome.ok, outcome
    return outcome.output


async def test_a_cold_engine_cannot_trace_or_use_the_kernel_keyring() -> None:
    jailed = await _cold(NativeOptions())
    assert jailed["ptrace"] == "Operation not permitted", jailed
    assert jailed["keyctl"] == "Operation not permitted", jailed
    assert jailed["getpid"] == "ok"
    # The control: without the filter the keyring answers (ptrace(TRACEME)
    # is already refused there, by the jail's process setup, so the filter is
    # a second wall for it).
    control = await _cold(NativeOptions(seccomp=False))
    assert control["keyctl"] == "ok", control


async def test_a_warm_worker_runs_under_the_filter_too(tmp_path) -> None:
    (tmp_path / "calls.py").write_text(CALLS)
    tmp_path.chmod(0o755)
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(WorkerSpec("python", str(tmp_path), entry="calls:probe"),
                                            PoolOptions(workers=1), NativeOptions()).serve)
        outcome = await pool.run(None)
        assert outcome.ok, outcome
        assert outcome.output["ptrace"] == "Operation not permitted", outcome.output
        assert outcome.output["keyctl"] == "Operation not permitted", outcome.output
        assert outcome.output["getpid"] == "ok"
        nursery.cancel_scope.cancel()
