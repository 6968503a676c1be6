"""The remote viewer widget against a real hub: live charts, connection state, reconnect and resume."""

import asyncio
import threading

import numpy as np
import pytest

from core.broadcast import BroadcastHub, HubSink
from core.events import BatchMetrics, EpochEnd, TrainingEnd, TrainingStart
from desktop.gui.remote_viewer import RemoteViewer

TOKEN = "viewer-token"


class HubThread:
    """A real hub serving from its own loop in a background thread (as the app's loop would)."""

    def __init__(self, port=0):
        self.loop = asyncio.new_event_loop()
        self.hub = BroadcastHub("127.0.0.1", port, TOKEN, batch_window=0.01)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self.loop).result(10)

    def publish(self, event):
        self.hub.publish_threadsafe(event)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def hub():
    server = HubThread()
    yield server
    if server.thread.is_alive():
        server.stop()


def epoch(n, run_id=5):
    metrics = {f"{s}_{m}": 0.1 * n + (0.01 if s == "val" else 0) for s in ("train", "val") for m in ("loss", "recall")}
    metrics |= {"val_cm_tp": 3.0 + n, "val_cm_fp": 1.0, "val_cm_tn": 4.0, "val_cm_fn": 2.0}
    return EpochEnd(run_id=run_id, epoch=n, metrics=metrics)


def test_remote_dashboard_follows_a_run_and_resumes_after_the_hub_restarts(qtbot, hub):
    hub.publish(TrainingStart(run_id=5, experiment_name="site-a"))
    hub.publish(epoch(1))
    viewer = RemoteViewer(hub.hub.url, TOKEN)
    qtbot.addWidget(viewer)
    try:
        qtbot.waitUntil(lambda: "run 5" in viewer.state.text(), timeout=10_000)
        hub.publish(BatchMetrics(run_id=5, epoch=2, step=7, metrics={"train_loss": 0.42}))
        hub.publish(epoch(2))
        qtbot.waitUntil(lambda: viewer.events_seen == 4, timeout=10_000)
        viewer.dashboard.refresh()
        xs, ys = viewer.dashboard.curve_data("val_recall")
        np.testing.assert_allclose(xs, [1, 2])
        np.testing.assert_allclose(ys, [0.11, 0.21])
        assert viewer.dashboard.cm_view.values["tp"] == 5.0

        # The hub goes away and comes back on the same port with the run's history (as after a network blip):
        port, history = hub.hub.port, [text for _, text in hub.hub.channels[5].history]
        hub.stop()
        qtbot.waitUntil(lambda: "reconnecting" in viewer.state.text(), timeout=10_000)
        restarted = HubThread(port)
        try:
            for text in history:  # same events, same sequence numbers
                from core.events import event_from_json

                restarted.publish(event_from_json(text))
            restarted.publish(epoch(3))
            restarted.publish(TrainingEnd(run_id=5, status="completed", best_epoch=3))
            qtbot.waitUntil(lambda: viewer.events_seen == 6, timeout=20_000)
            viewer.dashboard.refresh()
            xs, _ = viewer.dashboard.curve_data("val_recall")
            np.testing.assert_allclose(xs, [1, 2, 3])  # resumed after seq 4: nothing twice, nothing missed
            assert viewer.dashboard.best_epoch == 3
        finally:
            viewer.disconnect_from_hub()
            restarted.stop()
    finally:
        viewer.disconnect_from_hub()


def test_wrong_token_is_shown_and_not_retried(qtbot, hub):
    viewer = RemoteViewer(hub.hub.url, "nope")
    qtbot.addWidget(viewer)
    qtbot.waitUntil(lambda: "token is wrong" in viewer.state.text(), timeout=10_000)
    viewer.disconnect_from_hub()


def test_live_training_streams_through_the_hub_sink(qtbot, hub, gui_config):
    from core.data.prepare import prepare_dataset
    from core.sinks import SinkSet
    from core.training.runner import run_training

    viewer = RemoteViewer(hub.hub.url, TOKEN)
    qtbot.addWidget(viewer)
    qtbot.waitUntil(lambda: "waiting" in viewer.state.text() or "connected" in viewer.state.text(), timeout=10_000)
    events = []

    class Keep(HubSink):
        def handle(self, event):
            events.append(event)
            super().handle(event)

    config = gui_config.with_overrides(epochs=2)
    worker = threading.Thread(
        target=run_training, args=(config, prepare_dataset(config), SinkSet([Keep(hub.hub)])), kwargs={"run_id": 11}
    )
    worker.start()
    qtbot.waitUntil(lambda: not worker.is_alive(), timeout=120_000)
    qtbot.waitUntil(lambda: viewer.events_seen == len(events), timeout=20_000)
    viewer.dashboard.refresh()
    expected = [e.metrics["val_auroc"] for e in events if isinstance(e, EpochEnd)]
    np.testing.assert_allclose(viewer.dashboard.curve_data("val_auroc")[1], expected)
    viewer.disconnect_from_hub()
