"""The drop-oldest queue under real threads: a fast producer never blocks, a slow consumer
always gets the freshest item, and every item is either consumed or counted as dropped."""

import threading
import time

import pytest

from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed


def test_put_drops_the_oldest_when_full():
    q: DropOldestQueue[int] = DropOldestQueue(2)
    assert q.put(1) and q.put(2)
    assert q.put(3) is False
    assert q.dropped == 1
    assert [q.get(0), q.get(0)] == [2, 3]
    assert q.get(timeout=0.01) is None


def test_fast_producer_slow_consumer_accounts_for_every_item():
    q: DropOldestQueue[int] = DropOldestQueue(1)
    produced = 5000
    consumed: list[int] = []
    put_times: list[float] = []

    def producer():
        for i in range(produced):
            started = time.perf_counter()
            q.put(i)
            put_times.append(time.perf_counter() - started)
        q.close()

    def consumer():
        while True:
            try:
                item = q.get(timeout=1)
            except QueueClosed:
                return
            if item is not None:
                consumed.append(item)
                time.sleep(0.001)  # far slower than the producer

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(consumed) + q.dropped == produced
    assert q.dropped > produced // 2, "a slow consumer must see most items dropped"
    assert consumed == sorted(consumed), "order is preserved"
    assert consumed[-1] == produced - 1, "the freshest item is never the one dropped"
    assert max(put_times) < 0.5, "put never waits for the consumer"


def test_close_wakes_a_blocked_consumer_and_refuses_puts():
    q: DropOldestQueue[int] = DropOldestQueue(1)
    outcome: list[str] = []

    def consumer():
        try:
            q.get(timeout=30)
        except QueueClosed:
            outcome.append("closed")

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.1)
    q.close()
    t.join(2)
    assert outcome == ["closed"]
    with pytest.raises(QueueClosed):
        q.put(1)


def test_close_lets_the_consumer_drain_what_is_left():
    q: DropOldestQueue[str] = DropOldestQueue(3)
    q.put("a")
    q.put("b")
    q.close()
    assert q.get(0) == "a" and q.get(0) == "b"
    with pytest.raises(QueueClosed):
        q.get(0)


def test_resize_drops_the_surplus_oldest():
    q: DropOldestQueue[int] = DropOldestQueue(4)
    for i in range(4):
        q.put(i)
    q.resize(1)
    assert q.dropped == 3 and len(q) == 1 and q.get(0) == 3


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        DropOldestQueue(0)


def test_fair_queues_give_every_camera_its_turn():
    from pidaemon.pipeline.framequeue import FairQueues

    queues: FairQueues[str] = FairQueues(1)
    door, yard, shed = queues.add("door"), queues.add("yard"), queues.add("shed")
    for i in range(100):  # door floods; one queue slot each keeps only the freshest
        door.put(f"door{i}")
    yard.put("yard0")
    assert queues.take(0) == ["door99", "yard0"] and door.dropped == 99
    yard.put("yard1")
    shed.put("shed0")
    door.put("door100")
    assert sorted(queues.take(0)) == ["door100", "shed0", "yard1"]
    assert queues.take(0.01) == [] and len(queues) == 0


def test_fair_queues_wake_the_consumer_and_close():
    from pidaemon.pipeline.framequeue import FairQueues

    queues: FairQueues[int] = FairQueues(1)
    first, second = queues.add("a"), queues.add("b")
    threading.Timer(0.1, lambda: second.put(7)).start()
    started = time.monotonic()
    assert queues.take(5) == [7] and time.monotonic() - started < 4
    first.put(1)
    queues.remove("b")
    queues.close()
    assert queues.take(0) == [1]  # what was queued is still delivered
    with pytest.raises(QueueClosed):
        queues.take(0)
