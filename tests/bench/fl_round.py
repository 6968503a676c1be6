"""Federation overhead: the same rounds as a bare Flower app and as a PneumoFL federation, in one run.

Both use Flower's deployment engine on 127.0.0.1 (one SuperLink, N SuperNodes), the same model, data partitions,
local epochs, batch size and central evaluation. The bare app (tests/bench/bare_app) is a plain ClientApp with a
torch loop and Flower's FedAvg: no Lightning callbacks, sinks, database or live events. The PneumoFL federation
is what `pneumofl federate` runs, live events to a collector included.

A round's wall time is measured the same way for both: from sending the global model (configure_train) to the
end of the central evaluation of the new global model. Its time outside training is that wall time less the
round's longest site training (each site reports its training seconds): process start, imports, data loading,
the cross-site evaluation, transfers and Flower's polling.

Usage: .venv/bin/python tests/bench/fl_round.py [--sites 2] [--rounds 3] [--backbone resnet18] [--image-size 64]
                                               [--repeats 1]
With --repeats N the two federations alternate N times (round times on a shared 2-core machine vary by 10-20%).
Last line: JSON with every per-round time of each, their medians, the ratio of medians (PneumoFL / bare; target
<= 1.10), the median time outside training of each (target: PneumoFL's <= the bare app's), and bytes sent and
received per site per round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.broadcast.collector import EventCollector
from core.config import demo_config
from core.data.demo import ensure_demo_dataset
from core.federated.local import LocalFederation
from core.federated.settings import FederationConfig
from core.persistence import Database
from core.persistence.repository import get_metrics, list_rounds

BARE_APP = Path(__file__).parent / "bare_app"


def run_variant(kind: str, plan: FederationConfig, sites: int, data: Path, work: Path) -> dict:
    db_url = f"sqlite:///{work / 'runs.db'}"
    timings = work / "bare-rounds.json"
    collector = EventCollector([lambda _e: None])
    env = {"PNEUMOFL_BENCH_OUT": str(timings)}
    if kind == "pneumofl":
        collector.start()
        env |= collector.env
    started = time.monotonic()
    try:
        with LocalFederation(db_url, work / "nodes", sites=sites, data_path=str(data), extra_env=env) as federation:
            run_id = federation.server.submit(plan, BARE_APP if kind == "bare" else None)
            outcome = federation.server.follow(run_id, poll=0.5, status_every=5.0)
    finally:
        collector.stop()
    if outcome.status != "completed":
        raise SystemExit(f"{kind} federation {outcome.status}: {outcome.message} (logs in {work})")
    if kind == "bare":
        recorded = json.loads(timings.read_text())
        rounds, training = recorded["round_seconds"], recorded["train_seconds"]
    else:
        db = Database.open(db_url)
        with db.begin() as s:
            rows = [r for r in list_rounds(s, outcome.server_run_id) if r["round_number"] > 0]
            per_site = get_metrics(s, outcome.server_run_id, context="aggregated")
        db.close()
        rounds = [(r["end_time"] - r["start_time"]).total_seconds() for r in rows]
        training = [
            max(
                (
                    m.metric_value
                    for m in per_site
                    if m.metric_name == "train_seconds" and m.round_id == r["round_number"]
                ),
                default=0.0,
            )
            for r in rows
        ]
    per_site_round = sites * plan.rounds
    return {
        "round_seconds": [round(x, 2) for x in rounds],
        "outside_training_seconds": [round(x - t, 2) for x, t in zip(rounds, training)],
        "mean_round_s": round(statistics.fmean(rounds), 2),
        "total_s": round(time.monotonic() - started, 1),
        "bytes_sent_per_site_round": outcome.inbound_bytes // per_site_round,
        "bytes_received_per_site_round": outcome.outbound_bytes // per_site_round,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    data = ensure_demo_dataset()
    training = demo_config(experiment_name="bench", backbone=args.backbone, image_size=args.image_size, max_threads=1)
    plan = FederationConfig(
        name="bench", rounds=args.rounds, local_epochs=args.local_epochs, min_sites=args.sites, training=training
    )
    runs: dict[str, list[dict]] = {"bare": [], "pneumofl": []}
    with tempfile.TemporaryDirectory(prefix="pneumofl-fl-bench-") as tmp:
        for repeat in range(args.repeats):
            for kind in ("bare", "pneumofl"):
                print(f"running the {kind} federation ({repeat + 1}/{args.repeats})...", file=sys.stderr, flush=True)
                runs[kind].append(run_variant(kind, plan, args.sites, data, Path(tmp) / f"{kind}-{repeat}"))
                print(f"  {kind}: {runs[kind][-1]}", file=sys.stderr, flush=True)
    results = {}
    for kind, done in runs.items():
        rounds = [x for run in done for x in run["round_seconds"]]
        outside = [x for run in done for x in run["outside_training_seconds"]]
        results[kind] = {
            "round_seconds": rounds,
            "median_round_s": round(statistics.median(rounds), 2),
            "median_outside_training_s": round(statistics.median(outside), 2),
            "bytes_sent_per_site_round": done[-1]["bytes_sent_per_site_round"],
            "bytes_received_per_site_round": done[-1]["bytes_received_per_site_round"],
        }
    ratio = results["pneumofl"]["median_round_s"] / results["bare"]["median_round_s"]
    sent = results["pneumofl"]["bytes_sent_per_site_round"] / 1e6
    received = results["pneumofl"]["bytes_received_per_site_round"] / 1e6
    print(
        f"per-round wall time (median of {len(results['bare']['round_seconds'])} rounds): "
        f"bare {results['bare']['median_round_s']} s, PneumoFL {results['pneumofl']['median_round_s']} s, "
        f"ratio {ratio:.3f}; outside training: bare {results['bare']['median_outside_training_s']} s, PneumoFL "
        f"{results['pneumofl']['median_outside_training_s']} s; per site and round {sent:.2f} MB sent, "
        f"{received:.2f} MB received"
    )
    summary = {
        "repeats": args.repeats,
        "sites": args.sites,
        "rounds": args.rounds,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "bare": results["bare"],
        "pneumofl": results["pneumofl"],
        "ratio": round(ratio, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
