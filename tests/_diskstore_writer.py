"""Child process for tests/test_diskstore_crash_safety.py (not a test module).

Writes blocks to a DiskBlockStore forever, mixing ``put`` and ``put_many``
and small with large blocks (large ones make commits slow enough that a kill
often lands inside one).  After each call returns it prints the CIDs it
stored, one per line, so every printed CID is an acknowledged write.  The
parent kills it with SIGKILL; nothing here cleans up.

Usage: python _diskstore_writer.py DB_PATH SEED SYNCHRONOUS
"""

from __future__ import annotations

import random
import sys

from lattice.cid import CID, DAG_CBOR, RAW
from lattice.diskstore import DiskBlockStore, DiskStoreOptions


def main() -> None:
    path, seed, synchronous = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    out = sys.stdout
    serial = 0
    recent: list[tuple[CID, bytes]] = []  # re-put to exercise duplicate writes

    def new_block() -> tuple[CID, bytes]:
        nonlocal serial
        serial += 1
        size = rng.choice((0, 16, 100, 1000, 4096, 65536, 262144))
        data = f"{seed}:{serial}:".encode() + rng.randbytes(size)
        blk = CID.for_block(rng.choice((RAW, DAG_CBOR)), data), data
        recent[:] = [*recent[-7:], blk]
        return blk

    with DiskBlockStore.open(path, DiskStoreOptions(synchronous=synchronous)) as store:
        while True:
            if rng.random() < 0.5:
                cid, data = new_block()
                store.put(cid, data)
                out.write(f"{cid}\n")
            else:
                batch = [new_block() for _ in range(rng.randint(1, 40))]
                batch.append(rng.choice(recent))
                store.put_many(batch)
                out.write("".join(f"{cid}\n" for cid, _ in batch))
            out.flush()


if __name__ == "__main__":
    main()
