"""The broadcast hub with real websockets clients on 127.0.0.1."""

import asyncio
import json
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.broadcast.hub import SECRET_HEADER, BroadcastHub, HubSink
from core.broadcast.tokens import load_or_create_token, rotate_token
from core.data.prepare import prepare_dataset
from core.events import BatchMetrics, EpochEnd, TrainingEnd, TrainingStart
from core.sinks import ListSink, SinkSet
from core.training.runner import run_training
from tests.stalled_viewer import stalled_viewer

TOKEN = "s3cret-token"


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


async def started_hub(**kwargs):
    hub = BroadcastHub("127.0.0.1", 0, TOKEN, **kwargs)
    await hub.start()
    return hub


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect_until(ws, predicate, timeout=30):
    """Receive event envelopes until predicate(envelope) is true; return them all."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        message = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if message["type"] == "events":
            got.extend(message["events"])
            if any(predicate(e) for e in message["events"]):
                return got


def test_tokens_header_query_missing_wrong_and_rotation(tmp_path):
    path = tmp_path / "viewer-token"
    token = load_or_create_token(path)
    assert load_or_create_token(path) == token and oct(path.stat().st_mode)[-3:] == "600"

    async def scenario():
        hub = BroadcastHub("127.0.0.1", 0, lambda: load_or_create_token(path))
        await hub.start()
        try:
            async with connect(hub.url, additional_headers=auth(token)) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            async with connect(f"{hub.url}/?token={token}") as ws:
                assert (await recv_json(ws))["protocol"] == 1
            for headers in ({}, auth("wrong")):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(hub.url, additional_headers=headers):
                        pass
                assert refused.value.response.status_code == 401
            new = rotate_token(path)
            assert new != token
            with pytest.raises(InvalidStatus):
                async with connect(hub.url, additional_headers=auth(token)):
                    pass
            async with connect(hub.url, additional_headers=auth(new)) as ws:
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_repeated_failures_from_one_address_are_slowed_down():
    async def scenario():
        hub = await started_hub()
        durations = []
        try:
            for _ in range(6):
                started = time.monotonic()
                with pytest.raises(InvalidStatus):
                    async with connect(hub.url, additional_headers=auth("guess")):
                        pass
                durations.append(time.monotonic() - started)
            # A right token still gets in at once, and resets the counter.
            async with connect(hub.url, additional_headers=auth()) as ws:
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await hub.stop()
        return durations

    durations = asyncio.run(scenario())
    assert durations[-1] >= 0.45 > durations[0]  # 4th refusal waits 0.25 s, 5th 0.5 s, 6th 1 s


def test_viewer_joining_at_epoch_3_gets_every_event_in_order_without_duplicates(tiny_config):
    config = tiny_config.with_overrides(epochs=5, batch_metrics_every=1, gradient_every=1)
    data = prepare_dataset(config)
    truth = ListSink()

    async def scenario():
        hub = await started_hub()
        sinks = SinkSet([truth, HubSink(hub)])
        epoch3 = asyncio.Event()
        loop = asyncio.get_running_loop()

        class Epoch3(ListSink):
            def handle(self, event):
                if isinstance(event, EpochEnd) and event.epoch == 3:
                    loop.call_soon_threadsafe(epoch3.set)

        sinks.add(Epoch3())
        try:
            async with connect(hub.url, additional_headers=auth()) as early:
                await recv_json(early)
                await early.send(json.dumps({"type": "subscribe", "run_id": "current"}))
                trainer = threading.Thread(target=run_training, args=(config, data, sinks), kwargs={"run_id": 7})
                trainer.start()
                early_task = asyncio.create_task(collect_until(early, lambda e: e["type"] == "training_end", 120))
                await asyncio.wait_for(epoch3.wait(), 120)
                async with connect(hub.url, additional_headers=auth()) as late:
                    hello = await recv_json(late)
                    assert hello["current_run"] == 7
                    await late.send(json.dumps({"type": "subscribe", "run_id": 7}))
                    subscribed = await recv_json(late)
                    assert subscribed["type"] == "subscribed" and subscribed["from_seq"] == 1
                    late_events = await collect_until(late, lambda e: e["type"] == "training_end", 120)
                early_events = await early_task
                await asyncio.to_thread(trainer.join)
        finally:
            await hub.stop()
        return early_events, late_events

    early_events, late_events = asyncio.run(scenario())
    expected = [e.TYPE for e in truth.events]
    for received in (early_events, late_events):
        assert [e["seq"] for e in received] == list(range(1, len(truth.events) + 1))
        assert [e["type"] for e in received] == expected
    assert late_events == early_events
    epochs = [e["data"]["epoch"] for e in late_events if e["type"] == "epoch_end"]
    assert epochs == [1, 2, 3, 4, 5]


def test_a_stalled_viewer_is_coalesced_or_dropped_and_never_slows_the_others():
    async def scenario():
        hub = await started_hub(max_queue=500, max_lag=5_000, batch_window=0.01)
        try:
            # The stalled viewer subscribes, then never reads again: its socket buffers fill up.
            stalled = await asyncio.to_thread(stalled_viewer, hub.port, TOKEN)
            async with connect(hub.url, additional_headers=auth()) as fast:
                await recv_json(fast)
                hub.publish(TrainingStart(run_id=1, experiment_name="load"))
                await fast.send(json.dumps({"type": "subscribe", "run_id": 1}))
                # ~1.5 kB per event: 30 MB in all, far more than the stalled socket's kernel buffers hold.
                metrics = {f"train_metric_{i}": 0.5 for i in range(50)}
                for step in range(1, 20_001):
                    hub.publish(BatchMetrics(run_id=1, epoch=1, step=step, metrics=metrics))
                    if step % 500 == 0:
                        await asyncio.sleep(0.001)  # let the senders run, as a live loop would
                hub.publish(TrainingEnd(run_id=1, status="completed"))
                received = await collect_until(fast, lambda e: e["type"] == "training_end", 120)
            stalled.close()
        finally:
            await hub.stop()
        return received, hub

    received, hub = asyncio.run(scenario())
    assert [e["seq"] for e in received] == list(range(1, 20_003))  # the fast viewer lost nothing
    assert hub.coalesced_events > 0 or hub.slow_disconnects > 0  # the stalled one was relieved, not waited for


def test_malformed_binary_and_oversized_frames_are_rejected_and_the_hub_keeps_serving():
    async def scenario():
        hub = await started_hub(max_message=10_000)
        try:
            async with connect(hub.url, additional_headers=auth()) as ws:
                await recv_json(ws)
                await ws.send("{not json")
                assert "not JSON" in (await recv_json(ws))["message"]
                await ws.send(json.dumps({"type": "train", "epochs": 100}))
                assert "may only send 'subscribe' and 'ping'" in (await recv_json(ws))["message"]
                await ws.send(json.dumps({"type": "subscribe", "run_id": -3}))
                assert "run_id" in (await recv_json(ws))["message"]
                await ws.send(json.dumps({"type": "ping"}))
                assert (await recv_json(ws))["type"] == "pong"
                await ws.send(b"\x00\x01")
                with pytest.raises(ConnectionClosed) as closed:
                    await recv_json(ws)
                assert closed.value.rcvd.code == 1003
            async with connect(hub.url, additional_headers=auth()) as ws:
                await recv_json(ws)
                await ws.send("x" * 20_000)
                with pytest.raises(ConnectionClosed) as closed:
                    await recv_json(ws)
                assert closed.value.rcvd.code == 1009
            async with connect(hub.url, additional_headers=auth()) as ws:  # still serving
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_producer_path_needs_the_secret_and_rebroadcasts():
    async def scenario():
        hub = await started_hub(producer_secret="child-secret")
        try:
            for headers in ({}, {SECRET_HEADER: "nope"}, auth()):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(f"{hub.url}/producer", additional_headers=headers):
                        pass
                assert refused.value.response.status_code == 401
            async with connect(hub.url, additional_headers=auth()) as viewer:
                await recv_json(viewer)
                await viewer.send(json.dumps({"type": "subscribe", "run_id": "current"}))
                async with connect(f"{hub.url}/producer", additional_headers={SECRET_HEADER: "child-secret"}) as p:
                    await p.send(TrainingStart(run_id=3, experiment_name="site-a").to_json())
                    await p.send("garbage")  # ignored, logged
                    await p.send(EpochEnd(run_id=3, epoch=1, metrics={"val_recall": 0.5}).to_json())
                    events = await collect_until(viewer, lambda e: e["type"] == "epoch_end")
            assert [e["type"] for e in events] == ["training_start", "epoch_end"]
            assert events[1]["data"]["metrics"] == {"val_recall": 0.5}
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_producer_path_refuses_peers_that_are_not_loopback():
    # Tests may only bind and connect on 127.0.0.1, so a remote peer is represented by its address alone.
    hub = BroadcastHub("127.0.0.1", 0, TOKEN, producer_secret="child-secret")
    status, text = asyncio.run(hub.ingest.check("192.0.2.10", {SECRET_HEADER: "child-secret"}))
    assert status == 403 and "local processes" in text


def test_the_collector_hands_producer_events_to_its_listeners_and_keeps_none():
    from core.broadcast.collector import EventCollector
    from core.broadcast.producer import HUB_SECRET_ENV, HUB_URL_ENV, ProducerSink

    got = []
    with EventCollector([got.append, lambda event: 1 / 0]) as collector:  # a failing listener stops nothing
        env = collector.env
        sink = ProducerSink(env[HUB_URL_ENV], env[HUB_SECRET_ENV])
        sink.handle(TrainingStart(run_id=4, experiment_name="site-a"))
        sink.handle(EpochEnd(run_id=4, epoch=1, metrics={"val_recall": 0.5}))
        sink.close()
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [(e.TYPE, e.run_id) for e in got] == [("training_start", 4), ("epoch_end", 4)]
    assert not hasattr(collector.server, "channels")  # ingest only: no replay history to grow
