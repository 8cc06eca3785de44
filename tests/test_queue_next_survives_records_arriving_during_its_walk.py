"""``QueueView.next`` walks its ready and replicated indexes while calling
``accept``; an ``accept`` that reads the view (the claim planner asks for a
task's facts, which syncs the view) may apply records that grow those indexes.

Found in a 5-daemon run: the runner role failed with "dictionary changed size
during iteration" in ``_next_replicated`` and was restarted by its supervisor.
"""

from __future__ import annotations

from lattice import queue, signing

from ._queue_fixture import fresh_queue, task_cid

ME = signing.Signer.from_seed(b"\x11" * 32)
A = signing.peer_id_of(ME.public)


def _grows_while_walked(replicated: bool) -> None:
    rep, view = fresh_queue()
    first = [task_cid(i) for i in range(4)]
    later = iter(task_cid(100 + i) for i in range(50))

    def ops(ts):
        rep_ops = [queue.replicate_op(t, 2, 2) for t in ts] if replicated else []
        return rep_ops + queue.enqueue_ops(ts)

    rep.update(ops(first), ME)
    seen = []

    def accept(t):
        seen.append(t)
        rep.update(ops([next(later)]), ME)  # a peer's delta lands meanwhile
        view.info(t)  # reading the view applies it
        return True

    out = view.next(1_000, limit=10, accept=accept, me=A, plain=not replicated)
    assert out[:4] == first  # the walk finished over what it started with
    assert len(out) <= 10
    assert seen[:4] == first


def test_the_replicated_walk_survives_new_replicated_tasks() -> None:
    _grows_while_walked(replicated=True)


def test_the_plain_walk_survives_new_plain_tasks() -> None:
    _grows_while_walked(replicated=False)
