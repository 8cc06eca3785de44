"""A cancelled job's rules stop firing on every evaluator (issue 17 item 6).

In process, as in test_evaluator_dedupes: three peers hold replicas of a
fibsum job; one of them cancels the job (``_job/cancelled`` in its dataset,
docs/protocol.md *Cancel and retry*) before the split result arrives.  Every
peer that has the cancel fires nothing when the split result comes, whatever
order the two arrive in; a peer without it still would.
"""

from __future__ import annotations

from lattice import dataset, records
from lattice.cid import CID
from meshd.roles import jobs

from .test_evaluator_dedupes import Peer, fib_split, fibsum_plan


def test_every_evaluator_that_has_the_cancel_fires_nothing_whatever_the_order() -> None:
    genesis: CID = records.make_genesis("dataset", "job/fibsum", b"cancel")[0]
    author = Peer(0, genesis)
    submit = author.write(list(fibsum_plan(genesis).ops))
    assert len(author.evaluate()) == 1  # the split task: the job runs
    cancel = author.write([jobs.cancel_record("12D3KooWcanceller", 1_000)])
    split = author.write([dataset.set_op("split/results", fib_split(12, 4))])
    assert jobs.is_cancelled(author.data)
    assert author.evaluate() == []  # the map rule would fire four tasks now

    late = Peer(1, genesis)  # gets the split result before the cancel (out of order)
    for cid, data in (split, submit, cancel):
        late.data.receive_untrusted(cid, data)
    assert late.evaluate() == []

    unaware = Peer(2, genesis)  # has not heard of the cancel: its rules still fire
    unaware.data.receive_untrusted(*submit)
    unaware.write([dataset.set_op("split/results", fib_split(12, 4))])
    assert len(unaware.evaluate()) == 4
    unaware.data.receive_untrusted(*cancel)
    assert unaware.evaluate() == []  # and stop once it has
