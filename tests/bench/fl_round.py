"""Federation overhead: the same rounds as a bare Flower app and as a PneumoFL federation, in one run.

Both use Flower's deployment engine on 127.0.0.1 (one SuperLink, N SuperNodes), the same model, data partitions,
local epochs, batch size and central evaluation. The bare app (tests/bench/bare_app) is a plain ClientApp with a
torch loop and Flower's FedAvg: no Lightning callbacks, sinks, database or live events. The PneumoFL federation
is what `pneumofl federate` runs, live events to a collector included.

A round's wall time is measured the same way for both: from sending the global model (configure_train) to
sending the next one, and for the last round to the end of the central evaluation of the final global model.
(PneumoFL evaluates a round's global model while the next round trains, so the end of a round's evaluation is
not where the next round starts; the bare app evaluates, then sends.) Its time outside training is that wall time
less the round's longest site training (each site reports its training seconds): process start, imports, data
loading, the cross-site evaluation, transfers and Flower's polling.

Usage: .venv/bin/python tests/bench/fl_round.py [--sites 2] [--rounds 3] [--backbone resnet18] [--image-size 64]
                                               [--repeats 1]
With --repeats N the two federations alternate N times (round times on a shared 2-core machine vary by 10-20%).
Last line: JSON with every per-round time of each, their medians, the ratio of medians (PneumoFL / bare), the
median time outside training of each and their ratio (issue 21's target: PneumoFL's <= 0.25 x the bare app's,
rounds after the first; the first round, where a warm worker starts, is reported apart), bytes sent and
received per site per round, the time from submission to round 1 of each (PneumoFL's includes the plan question
its sites answer before any training) and the first round's extra time over later rounds (issue 19: what the
app check and the plan question add).
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
from core.federated.app_trust import StewardKey
from core.federated.local import LocalFederation
from core.federated.settings import FederationConfig
from core.persistence import Database
from core.persistence.federation_records import list_rounds
from core.persistence.metric_reads import get_metrics

BARE_APP = Path(__file__).parent / "bare_app"


def run_variant(kind: str, plan: FederationConfig, sites: int, data: Path, work: Path) -> dict:
    db_url = f"sqlite:///{work / 'runs.db'}"
    timings = work / "bare-rounds.json"
    collector = EventCollector([lambda _e: None])
    # The bare app on Flower's own settings: SuperExec's default 1 s task poll, and no warm worker (the ClientApp
    # trains in Flower's fresh process per message). What PneumoFL tunes for itself does not speed it up.
    env = {"PNEUMOFL_BENCH_OUT": str(timings), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1.0"}
    if kind == "pneumofl":
        collector.start()
        env = {"PNEUMOFL_BENCH_OUT": str(timings)} | collector.env
    started = time.monotonic()
    try:
        # A benchmark-only steward key approves both apps for the sites: the bare app runs like any other app a
        # site's steward approved (sites refuse every app nobody they trust signed).
        steward = StewardKey(work / "bench-steward")
        with LocalFederation(
            db_url,
            work / "nodes",
            sites=sites,
            data_path=str(data),
            extra_env=env,
            steward=steward,
            warm_workers=kind == "pneumofl",
        ) as federation:
            app = federation.offer_app(BARE_APP) if kind == "bare" else None
            submitted_at = time.time()
            run_id = federation.server.submit(plan, app)
            outcome = federation.server.follow(run_id, poll=0.5, status_every=5.0)
    finally:
        collector.stop()
    if outcome.status != "completed":
        raise SystemExit(f"{kind} federation {outcome.status}: {outcome.message} (logs in {work})")
    if kind == "bare":
        recorded = json.loads(timings.read_text())
        starts, training = recorded["round_started_at"], recorded["train_seconds"]
        rounds = round_periods(starts, starts[-1] + recorded["round_seconds"][-1])
        first_started = recorded["first_round_started_at"]
    else:
        db = Database.open(db_url)
        with db.begin() as s:
            rows = [r for r in list_rounds(s, outcome.server_run_id) if r["round_number"] > 0]
            per_site = get_metrics(s, outcome.server_run_id, context="aggregated")
        db.close()
        rounds = round_periods([r["start_time"].timestamp() for r in rows], rows[-1]["end_time"].timestamp())
        first_started = rows[0]["start_time"].timestamp()
        training = [
            max(
                (
                    m.metric_value
                    for m in per_site
                    if m.metric_name == "train_seconds" and m.round_number == r["round_number"]
                ),
                default=0.0,
            )
            for r in rows
        ]
    per_site_round = sites * plan.rounds
    return {
        # From submission to round 1: the ServerApp's start and, for PneumoFL, the plan question (each site's app
        # verified by its SuperNode, a ClientApp process per site to relay the plan, the policy check, the audit).
        "before_first_round_s": round(first_started - submitted_at, 2),
        # What the first round costs over the later ones (a site's first message of a run is where Flower verifies
        # the app; PneumoFL's sites have verified it already, at the plan question).
        "first_round_extra_s": round(rounds[0] - statistics.median(rounds[1:]), 2) if len(rounds) > 1 else 0.0,
        "round_seconds": [round(x, 2) for x in rounds],
        "outside_training_seconds": [round(x - t, 2) for x, t in zip(rounds, training)],
        "mean_round_s": round(statistics.fmean(rounds), 2),
        "total_s": round(time.monotonic() - started, 1),
        "bytes_sent_per_site_round": outcome.inbound_bytes // per_site_round,
        "bytes_received_per_site_round": outcome.outbound_bytes // per_site_round,
    }


def round_periods(starts: list[float], last_end: float) -> list[float]:
    """Each round's span: from its start to the next round's, the last one's to ``last_end``."""
    return [end - start for start, end in zip(starts, [*starts[1:], last_end])]


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
        outside = [x for run in done for x in run["outside_training_seconds"][1:]] or [
            x for run in done for x in run["outside_training_seconds"]
        ]
        first_outside = [run["outside_training_seconds"][0] for run in done]
        results[kind] = {
            "before_first_round_s": round(statistics.median(run["before_first_round_s"] for run in done), 2),
            "first_round_extra_s": round(statistics.median(run["first_round_extra_s"] for run in done), 2),
            "round_seconds": rounds,
            "median_round_s": round(statistics.median(rounds), 2),
            "median_outside_training_s": round(statistics.median(outside), 2),
            "first_round_outside_training_s": round(statistics.median(first_outside), 2),
            "bytes_sent_per_site_round": done[-1]["bytes_sent_per_site_round"],
            "bytes_received_per_site_round": done[-1]["bytes_received_per_site_round"],
        }
    ratio = results["pneumofl"]["median_round_s"] / results["bare"]["median_round_s"]
    outside_ratio = results["pneumofl"]["median_outside_training_s"] / results["bare"]["median_outside_training_s"]
    sent = results["pneumofl"]["bytes_sent_per_site_round"] / 1e6
    received = results["pneumofl"]["bytes_received_per_site_round"] / 1e6
    print(
        f"per-round wall time (median of {len(results['bare']['round_seconds'])} rounds): "
        f"bare {results['bare']['median_round_s']} s, PneumoFL {results['pneumofl']['median_round_s']} s, "
        f"ratio {ratio:.3f}; outside training: bare {results['bare']['median_outside_training_s']} s, PneumoFL "
        f"{results['pneumofl']['median_outside_training_s']} s (ratio {outside_ratio:.3f}, rounds after the first; "
        f"first round: bare {results['bare']['first_round_outside_training_s']} s, PneumoFL "
        f"{results['pneumofl']['first_round_outside_training_s']} s); per site and round {sent:.2f} MB sent, "
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
        "outside_training_ratio": round(outside_ratio, 3),
    }
    checks = results["pneumofl"]["before_first_round_s"] - results["bare"]["before_first_round_s"]
    print(
        f"before round 1: bare {results['bare']['before_first_round_s']} s, PneumoFL "
        f"{results['pneumofl']['before_first_round_s']} s (+{checks:.2f} s: the plan question and PneumoFL's server "
        f"setup); first round over later rounds: bare {results['bare']['first_round_extra_s']} s, PneumoFL "
        f"{results['pneumofl']['first_round_extra_s']} s"
    )
    summary["plan_question_and_setup_s"] = round(checks, 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
