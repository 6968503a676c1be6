"""The server hands each round's central evaluation to a thread of its own and sends the next round at once; the
evaluations still end in round order, and one that fails fails the federation instead of vanishing."""

from __future__ import annotations

import threading
import time

import pytest

from core.events import RoundMetrics
from core.federated.central_rounds import EvaluationQueue, SerialSink
from core.sinks import EventSink


def test_evaluations_run_behind_flower_in_round_order():
    queue, done, release = EvaluationQueue(), [], threading.Event()

    def evaluate(server_round: int) -> None:
        release.wait(10)
        done.append(server_round)

    for server_round in range(4):
        queue.submit(evaluate, server_round)  # returns while round 0 is still being evaluated
    assert done == []
    release.set()
    queue.drain()
    assert done == [0, 1, 2, 3]
    queue.close()


def test_a_failed_evaluation_fails_the_next_round_or_the_end():
    queue = EvaluationQueue()

    def broken(server_round: int) -> None:
        raise RuntimeError(f"round {server_round}: the evaluation set became unreadable")

    queue.submit(broken, 1)
    with pytest.raises(RuntimeError, match="round 1"):
        queue.drain()
    queue.submit(broken, 2)
    deadline = time.monotonic() + 10
    with pytest.raises(RuntimeError, match="round 2"):  # at the first round queued after it failed
        while time.monotonic() < deadline:
            queue.submit(lambda _round: None, 3)
            time.sleep(0.05)
    queue.close()


def test_close_waits_for_what_is_queued_and_logs_failures(caplog):
    queue, done, release = EvaluationQueue(), [], threading.Event()

    def broken(_round: int) -> None:
        release.wait(10)
        raise ValueError("disk full")

    queue.submit(broken, 1)
    queue.submit(done.append, 2)
    release.set()
    queue.close()  # the federation failed already: close says nothing more to it
    assert done == [2]
    assert "a central evaluation failed" in caplog.text


def test_the_sink_takes_one_event_at_a_time_from_two_threads():
    class Counting(EventSink):
        def __init__(self) -> None:
            self.inside, self.most, self.events = 0, 0, 0

        def handle(self, event) -> None:
            self.inside += 1
            self.most = max(self.most, self.inside)
            threading.Event().wait(0.001)
            self.events += 1
            self.inside -= 1

    counting = Counting()
    sink = SerialSink(counting)
    event = RoundMetrics(run_id=1, round_number=1, server_metrics={}, aggregated_client_metrics={})
    threads = [threading.Thread(target=lambda: [sink.handle(event) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.events == 200 and counting.most == 1
