"""Broadcast fan-out: 100 viewers on a real hub, delivery latency and loss, training slowdown, hub memory.

The hub serves from its own asyncio loop thread (as in the app); events are published from another thread (as the
training thread does). The 100 viewers are real websockets clients in a separate process, so their work does not
share the hub's interpreter. Phases:
  1. 200 events/s and 2,000 events/s for --seconds each: per-event latency (viewer receive time - event timestamp),
     p50/p99, and events lost per viewer.
  2. A demo training (--epochs) with the hub sink and no viewers, then with 100 viewers following it, alternated
     twice: the time ratio.
  3. One stalled viewer (subscribes, never reads) for --stall-s seconds at 200 events/s of ~1.5 kB each (more
     than the socket buffers hold): hub RSS over time and the viewer's lag.

Usage: .venv/bin/python tests/bench/ws_fanout.py [--viewers 100] [--seconds 10] [--stall-s 60] [--epochs 1]
Last line: JSON. Targets: p99 <= 50 ms at 200 events/s, nothing lost for viewers that keep up, training ratio
<= 1.03, hub memory flat while a viewer is stalled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from tests.stalled_viewer import stalled_viewer

TOKEN = "bench-token"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


# ---------------------------------------------------------------------------------------------------- viewers
def viewers_main(url: str, count: int, ready, stop, results) -> None:
    """Process body: ``count`` viewers following the current run; reports latencies per phase (epoch field)."""
    from websockets.asyncio.client import connect

    async def one(index: int, latencies: dict, counts: list) -> None:
        async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None) as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "subscribe", "run_id": "current"}))
            ready.put(index)
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                if index % 10:
                    # Most viewers only count (at C speed), so the viewer process measures the hub, not json.loads.
                    for phase in (200, 2000):
                        counts[index][phase] = counts[index].get(phase, 0) + raw.count(f'"epoch":{phase},')
                    continue
                message = json.loads(raw)
                if message.get("type") != "events":
                    continue
                for envelope in message["events"]:
                    if envelope["type"] != "batch_metrics":
                        continue
                    phase = envelope["data"]["epoch"]
                    counts[index][phase] = counts[index].get(phase, 0) + 1
                    latencies.setdefault(phase, []).append(now - envelope["timestamp"])

    async def main() -> None:
        latencies: dict[int, list[float]] = {}
        counts: list[dict[int, int]] = [{} for _ in range(count)]
        await asyncio.gather(*(one(i, latencies, counts) for i in range(count)), return_exceptions=True)
        results.put({"latencies": latencies, "counts": counts})

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------------- hub side
class HubThread:
    def __init__(self) -> None:
        from core.broadcast import BroadcastHub

        self.loop = asyncio.new_event_loop()
        self.hub = BroadcastHub("127.0.0.1", 0, TOKEN)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self.loop).result(10)

    def call(self, fn):
        async def wrapper():
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def feed(hub, rate: float, seconds: float, phase: int, run_id: int, width: int = 1) -> int:
    """Publish batch_metrics (``width`` metrics each) at ``rate`` per second from this thread, as training would."""
    from core.events import BatchMetrics

    metrics = {f"train_metric_{i}": 0.5 for i in range(width)} if width > 1 else {"train_loss": 0.5}
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            sent += 1
            hub.publish_threadsafe(BatchMetrics(run_id=run_id, epoch=phase, step=sent, metrics=metrics))
        time.sleep(0.002)
    return sent


def train_once(db_dir: str, hub, index: int, epochs: int) -> float:
    from core.broadcast import HubSink
    from core.config import demo_config
    from core.persistence import Database
    from core.training.recorded import train_and_record

    db = Database.open(f"sqlite:///{db_dir}/t{index}.db")
    config = demo_config(epochs=epochs, early_stopping_patience=0, accelerator="cpu")
    result = train_and_record(config, db, sinks=[HubSink(hub)], work_dir=f"{db_dir}/ckpt{index}")
    db.close()
    assert result.status == "completed", result.error
    return result.fit_seconds


def pct(values: list[float]) -> dict[str, float]:
    data = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(data, 50)), 1), "p99_ms": round(float(np.percentile(data, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stall-s", type=float, default=60)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    from core.events import TrainingStart

    ctx = mp.get_context("spawn")
    server = HubThread()
    hub = server.hub
    rss_idle = rss_mb()

    # Phase 1: fan-out latency and loss.
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=viewers_main, args=(hub.url, args.viewers, ready, stop, results))
    proc.start()
    for _ in range(args.viewers):
        ready.get(timeout=120)
    hub.publish_threadsafe(TrainingStart(run_id=1, experiment_name="fanout"))
    time.sleep(0.5)
    sent = {}
    for phase, rate in ((200, 200.0), (2000, 2000.0)):
        sent[phase] = feed(hub, rate, args.seconds, phase, run_id=1)
        time.sleep(1.0)
        print(f"fed {sent[phase]} events at {rate:.0f}/s")
    rss_100 = rss_mb()
    time.sleep(1.0)
    stop.set()
    report = results.get(timeout=60)
    proc.join(30)
    fanout = {}
    for phase in (200, 2000):
        received = [c.get(phase, 0) for c in report["counts"]]
        fanout[f"{phase}_per_s"] = pct(report["latencies"].get(phase, [0.0])) | {
            "sent": sent[phase],
            "lost_total": int(sum(sent[phase] - r for r in received)),
            "viewers_complete": int(sum(r == sent[phase] for r in received)),
        }
    print(f"fan-out: {fanout}")

    server.stop()

    # Phase 2: training with 100 viewers vs none, each on a fresh hub (no earlier history to replay).
    times: dict[str, list[float]] = {"none": [], "viewers": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            server = HubThread()
            times["none"].append(train_once(tmp, server.hub, rep * 2, args.epochs))
            server.stop()
            server = HubThread()
            hub = server.hub
            ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
            proc = ctx.Process(target=viewers_main, args=(hub.url, args.viewers, ready, stop, results))
            proc.start()
            for _ in range(args.viewers):
                ready.get(timeout=120)
            times["viewers"].append(train_once(tmp, hub, rep * 2 + 1, args.epochs))
            stop.set()
            results.get(timeout=60)
            proc.join(30)
            server.stop()
            print(f"training fit: none {times['none'][-1]:.2f}s, {args.viewers} viewers {times['viewers'][-1]:.2f}s")
    ratio = statistics.median(times["viewers"]) / statistics.median(times["none"])

    # Phase 3: one stalled viewer for --stall-s seconds at 200 events/s.
    server = HubThread()
    hub = server.hub
    hub.publish_threadsafe(TrainingStart(run_id=99, experiment_name="stall"))
    sock = stalled_viewer(hub.port, TOKEN)
    samples = []
    started = time.perf_counter()
    while time.perf_counter() - started < args.stall_s:
        feed(hub, 200.0, 1.0, 3, run_id=99, width=50)  # ~1.5 kB events: more than the socket buffers hold
        samples.append(rss_mb())
    lag = server.call(lambda: max((v.channel.next_seq - v.cursor for v in hub.viewers if v.channel), default=0))
    sock.close()
    server.stop()
    half = len(samples) // 2
    result = {
        "viewers": args.viewers,
        "fanout": fanout,
        "training_fit_s_none": [round(t, 2) for t in times["none"]],
        "training_fit_s_viewers": [round(t, 2) for t in times["viewers"]],
        "training_ratio": round(ratio, 4),
        "hub_rss_mb_idle": round(rss_idle, 1),
        "hub_rss_mb_100_viewers": round(rss_100, 1),
        "stall_s": args.stall_s,
        "stall_rss_mb_first_half_max": round(max(samples[:half]), 1),
        "stall_rss_mb_second_half_max": round(max(samples[half:]), 1),
        "stalled_viewer_lag_at_end": lag,
        "slow_viewer_coalesced_events": hub.coalesced_events,
        "slow_viewer_disconnects": hub.slow_disconnects,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
