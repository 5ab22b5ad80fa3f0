"""Which batch writers sharing an MLflow server keep: the rules, without a server."""

import os
import socket
import subprocess
import time

from align_track_pipeline.core.trackers.mlflow import batches


def _batch(pid: int, host: str = "", ms: int = 1) -> str:
    return f"{ms:012x}.0123abcd.{pid}@{host or socket.gethostname()}"


def test_ids_sort_by_creation_time_and_name_their_writer():
    # 2 ms apart, many times over: the random part never decides the order.
    pairs = [(batches.new_batch_id(lambda t=t: t), batches.new_batch_id(lambda t=t: t + 0.002))
             for t in (1_700_000_000.0 + i for i in range(50))]
    assert all(first < second for first, second in pairs)
    first = batches.new_batch_id()  # the real clock by default
    assert abs(int(first.split(".")[0], 16) - time.time() * 1000) < 60_000
    assert batches.BatchId.parse(first) == batches.BatchId(os.getpid(), socket.gethostname())
    assert batches.BatchId.parse("aaaa") is None  # ids of older versions: never alive


def test_this_process_writes_a_batch_only_inside_writing():
    watch = batches.Watch()
    batch = batches.new_batch_id()
    assert not watch.alive(batch, 1)
    with batches.writing(batch):
        assert watch.alive(batch, 1)
    assert not watch.alive(batch, 2)


def test_a_batch_of_a_dead_local_process_is_abandoned_at_once():
    proc = subprocess.Popen(["sleep", "30"])
    watch = batches.Watch()
    try:
        assert watch.alive(_batch(proc.pid), 3)
    finally:
        proc.kill()
        proc.wait()
    assert not watch.alive(_batch(proc.pid), 3)


class _Clock:
    """A clock the test moves by hand: the grace period measured without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_remote_batch_lives_while_it_grows():
    clock = _Clock()
    watch = batches.Watch(grace_seconds=15, clock=clock)
    batch = _batch(4242, host="another-host.example")
    assert watch.alive(batch, 2)  # first sight: given the grace period
    clock.now += 10
    assert watch.alive(batch, 3)  # grew: the period starts again
    clock.now += 14.9
    assert watch.alive(batch, 3)  # 14.9 s without growing
    clock.now += 0.1
    assert not watch.alive(batch, 3)  # 15 s without growing: abandoned
    assert not watch.alive(batch, 3)  # and stays so
    assert watch.alive(batch, 4)  # grows again: alive again


def test_everyone_keeps_the_smallest_complete_or_live_batch():
    live, dead, done = _batch(4242, "remote", ms=1), _batch(4243, "remote", ms=2), _batch(
        4244, "remote", ms=3)
    watch = batches.Watch(grace_seconds=0.0)  # nothing remote counts as growing
    sizes = {live: 1, dead: 1, done: 5}
    found = {live: (False, True), dead: (False, True), done: (True, True)}
    assert batches.keeper(found, watch, sizes) == done
    watch = batches.Watch()
    assert batches.keeper(found, watch, sizes) == live  # begun first, still being written
    assert batches.keeper({live: (False, False), done: (True, True)}, watch, sizes) == done
    assert batches.keeper({dead: (False, False)}, watch, sizes) is None
