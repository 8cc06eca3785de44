"""Reading a dataset is linear in its keys and bounded (issue 14, finding 6).

The recursive read rescanned every key at every level: 4,000 nested keys took
4 s, on the thread that also runs the node.  A read now walks the keys under
its path once, and refuses a value of more than ``max_keys`` keys.
"""

from __future__ import annotations

import time

import pytest

from lattice import dataset, goho, records
from lattice.blockstore import MemoryBlockStore
from lattice.errors import DatasetTooLarge
from lattice.signing import Signer


def _replica(ops) -> goho.Replica:
    g, _ = records.make_genesis("dataset", "reads")
    r = goho.Replica.empty(g, MemoryBlockStore())
    r.update(ops, Signer.from_seed(b"\x41" * 32))
    return r


def test_four_thousand_nested_keys_read_fast() -> None:
    r = _replica([dataset.set_op("/".join(["k"] * (i % 20 + 1)) + f"/{i}", i) for i in range(4000)])
    start = time.perf_counter()
    value = dataset.get(r, "k")
    took = time.perf_counter() - start
    assert value["0"] == 0 and value["k"]["1"] == 1 and value["k"]["k"]["k"]["3"] == 3
    assert took < 0.5, f"reading 4,000 nested keys took {took:.2f} s"


def test_a_value_of_its_own_hides_the_keys_below_it() -> None:
    r = _replica([dataset.set_op("a", 1), dataset.set_op("a/b", 2), dataset.append_op("c/d", 3),
                  dataset.set_op("c-x", 4), dataset.append_op("e", 5), dataset.set_op("e", 6)])
    assert dataset.get(r, "a") == 1
    assert dataset.get(r, "c") == {"d": [3]}
    assert dataset.get(r, "e") == [6, 5]
    assert dataset.get(r, "") == {"a": 1, "c": {"d": [3]}, "c-x": 4, "e": [6, 5]}
    assert dataset.get(r, "zz") is None


def test_a_read_over_its_key_budget_is_refused() -> None:
    r = _replica([dataset.set_op(f"big/{i}", i) for i in range(50)])
    assert len(dataset.get(r, "big", max_keys=50)) == 50
    with pytest.raises(DatasetTooLarge):
        dataset.get(r, "big", max_keys=49)
    with pytest.raises(DatasetTooLarge):
        dataset.get(r, "", max_keys=10)
