from hotplugd.engine.queue import PendingQueue
from hotplugd.model import Block

MiB = 1 << 20


def test_add_keeps_first_time_and_counts_bytes_once():
    q = PendingQueue(10)
    assert q.add(Block(1, 128 * MiB), 1.0)
    assert q.add(Block(1, 128 * MiB), 5.0)
    assert len(q) == 1 and q.bytes == 128 * MiB and q.oldest == 1.0
    assert q.memmap_bytes == 2 * MiB


def test_bound_refuses_and_flags_overflow():
    q = PendingQueue(2)
    assert q.add(Block(1, MiB), 0) and q.add(Block(2, MiB), 0)
    assert not q.add(Block(3, MiB), 0)
    assert q.overflowed and 3 not in q and len(q) == 2


def test_discard_and_take_keep_totals_right():
    q = PendingQueue(10)
    for i in range(5):
        q.add(Block(i, MiB, node=i % 2), float(i))
    assert q.discard(0).block.index == 0 and q.discard(0) is None
    assert q.oldest == 1.0 and sorted(q._nodes) == [0, 1]
    odd = q.take(busy_nodes={0})  # node 0 has a phase running: its blocks stay queued
    assert [w.block.index for w in odd] == [1, 3] and q.bytes == 2 * MiB
    assert list(q._nodes) == [0] and q.oldest == 2.0
    rest = q.take()
    assert [w.block.index for w in rest] == [2, 4] and q.bytes == 0 and q.oldest is None and not q._nodes
