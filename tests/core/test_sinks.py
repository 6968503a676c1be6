from core.events import EpochEnd, RunError
from core.sinks import EventSink, ListSink, SinkSet


class ExplodingSink(EventSink):
    name = "exploding"

    def __init__(self):
        self.calls = 0

    def handle(self, event):
        self.calls += 1
        raise RuntimeError("disk full")


def test_a_failing_sink_is_reported_once_and_others_keep_receiving():
    good, bad = ListSink(), ExplodingSink()
    sinks = SinkSet([bad, good])
    sinks.run_id = 5
    for epoch in range(1, 4):
        sinks.handle(EpochEnd(epoch=epoch, metrics={}))
    errors = good.of_type(RunError)
    assert len(errors) == 1
    assert "exploding" in errors[0].message and "disk full" in errors[0].message
    assert errors[0].run_id == 5 and not errors[0].fatal
    assert [e.epoch for e in good.of_type(EpochEnd)] == [1, 2, 3]
    assert bad.calls == 3  # still tried: a sink may recover


def test_close_failures_do_not_raise():
    class BadClose(ListSink):
        name = "bad-close"

        def close(self):
            raise OSError("gone")

    good = ListSink()
    SinkSet([BadClose(), good]).close()
    assert "bad-close" in good.of_type(RunError)[0].message
