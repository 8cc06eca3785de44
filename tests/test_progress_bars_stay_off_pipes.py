"""Progress bars draw on a terminal's stderr only: piped output, JSON above all, stays clean.

In process, :class:`meshd.cli.progress.Progress` draws one redrawn line on a
stream that says it is a TTY and writes nothing on one that does not.  On a
real daemon, ``meshd engine add`` (an upload) and ``meshd enqueue --wait``
(waiting on many results) run with stdout and stderr piped: stdout is
exactly the JSON answer, with every task's final state, and stderr is empty.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

from meshd.cli.progress import WIDTH, Progress

from ._daemons import ECHO, Daemon, echo_task


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_pipe_gets_nothing() -> None:
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        with Progress(stream, 4, "waiting") as bar:
            bar.update(1, force=True)
            bar.update(4, "1 failed")
    assert pipe.getvalue() == ""
    drawn = tty.getvalue().split("\r\x1b[K")
    assert drawn[1].startswith(f"waiting [{'#' * (WIDTH // 4)}{'.' * (WIDTH - WIDTH // 4)}] 1/4")
    assert drawn[2].startswith(f"waiting [{'#' * WIDTH}] 4/4  1 failed")
    assert drawn[-1] == ""  # closed: the line is cleared
    sizes = Progress(_Terminal(), 3 * 1024 * 1024, "uploading", bytes_=True).line(1024 * 1024)
    assert "1.0 MiB/3.0 MiB" in sizes


def test_piped_json_output_is_not_corrupted(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "node").init().start()
    try:
        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "meshd.cli", *args, "--json", "--home", str(d.home)],
                                  capture_output=True, text=True, env=d.env, timeout=120)

        added = run("engine", "add", str(ECHO), "--interpreter", "python3", "--serve-arg=--jsonl")
        assert added.returncode == 0 and added.stderr == "", added.stderr
        engine = json.loads(added.stdout)["cid"]
        tasks = tmp_path / "tasks.json"
        tasks.write_text(json.dumps([echo_task(engine, i) for i in range(12)]))
        waited = run("enqueue", str(tasks), "--wait")
        assert waited.returncode == 0 and waited.stderr == "", waited.stderr
        answer = json.loads(waited.stdout)
        assert len(answer["tasks"]) == 12 and {t["state"] for t in answer["tasks"]} == {"completed"}

        # The wait follows one results stream, and still gives up at --timeout.
        slow = d.add_script_engine("sleeps", "import sys, time\nsys.stdin.read()\ntime.sleep(120)\n")
        tasks.write_text(json.dumps([echo_task(slow, "long")]))
        t0 = time.monotonic()
        waited = run("enqueue", str(tasks), "--wait", "--timeout", "2")
        assert waited.returncode == 1 and "timed out after 2s: 1 task(s) still pending" in waited.stderr, waited.stderr
        assert time.monotonic() - t0 < 30  # not the 120 s the engine sleeps
    finally:
        d.stop()
