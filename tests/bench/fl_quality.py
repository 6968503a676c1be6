"""Federation quality: server AUROC per strategy and partition, against the centralized demo with the same epochs.

The demo data over ``--sites`` sites (iid and label-skew, flwr-datasets' partitioners as `pneumofl federate`
uses them), each federation run with PneumoFL's defaults (`pneumofl federate --demo` with only --strategy and
--partition changed) on one SuperLink with its SuperNodes per partition. The reference is the centralized demo run
(same model, image size, batch size and learning rate) trained for rounds x local epochs epochs on the whole
train split. Every AUROC is on the demo's validation split, which the server holds out and no site trains on:
the best round's (or epoch's) and the last one's.

Usage: .venv/bin/python tests/bench/fl_quality.py [--strategies fedavg,fedprox,...] [--partitions iid,label-skew]
       [--rounds N] [--local-epochs N] [--sites 3]
Last line: JSON {"centralized": {...}, "federated": {partition: {strategy: {...}}}, "best": {partition: {...}}}.
Targets: the best iid strategy's server AUROC >= 0.95 x centralized; the best label-skew one's >= 0.90 x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.broadcast.collector import EventCollector
from core.data.demo import ensure_demo_dataset
from core.federated.local import LocalFederation
from core.federated.settings import STRATEGIES, FederationConfig
from core.persistence import Database
from core.persistence.federation_records import list_rounds
from core.persistence.metric_reads import get_metrics
from core.persistence.runs import get_run
from core.training.recorded import train_and_record


def federated(plan: FederationConfig, federation: LocalFederation, db_url: str) -> dict:
    started = time.monotonic()
    assert federation.server is not None
    outcome = federation.run(plan)
    seconds = time.monotonic() - started
    if outcome.status != "completed":
        return {"status": outcome.status, "message": outcome.message, "seconds": round(seconds, 1)}
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            run = get_run(s, outcome.server_run_id)
            rounds = [r for r in list_rounds(s, outcome.server_run_id) if r["round_number"] > 0]
            per_site = get_metrics(s, outcome.server_run_id, context="aggregated")
    finally:
        db.close()
    last = rounds[-1]["server_metrics"] if rounds else {}

    def mean(name: str) -> float:
        values = [m.metric_value for m in per_site if m.metric_name == name and m.site_id]
        return round(sum(values) / max(len(values), 1), 2)

    return {
        "status": "completed",
        "best_auroc": round(run.best_val_auroc or 0.0, 4),
        "best_round": run.best_epoch,
        "last_auroc": round(float(last.get("val_auroc", 0.0)), 4),
        "last_sensitivity": round(float(last.get("val_recall", 0.0)), 3),
        "last_specificity": round(float(last.get("val_specificity", 0.0)), 3),
        "auroc_per_round": [round(float(r["server_metrics"].get("val_auroc", 0.0)), 3) for r in rounds],
        "round_seconds": [round((r["end_time"] - r["start_time"]).total_seconds(), 1) for r in rounds],
        "site_train_s": mean("train_seconds"),
        "site_wait_s": mean("wait_seconds"),
        "seconds": round(seconds, 1),
    }


def centralized(plan: FederationConfig, work: Path) -> dict:
    config = plan.training.with_overrides(
        demo=True,
        experiment_name="centralized reference",
        epochs=plan.rounds * plan.local_epochs,
        early_stopping_patience=0,
        max_threads=2,
    )
    db = Database.open(f"sqlite:///{work / 'central.db'}")
    try:
        started = time.monotonic()
        result = train_and_record(config, db, work_dir=work / "central")
        seconds = time.monotonic() - started
        with db.begin() as s:
            run = get_run(s, result.run_id)
    finally:
        db.close()
    return {
        "epochs": config.epochs,
        "best_auroc": round(run.best_val_auroc or 0.0, 4),
        "best_epoch": run.best_epoch,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--partitions", default="iid,label-skew")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--local-epochs", type=int)
    parser.add_argument("--backbone")
    parser.add_argument("--lr", type=float)
    args = parser.parse_args()
    data = ensure_demo_dataset()
    base = FederationConfig(name="quality")
    changes = {k: v for k, v in (("rounds", args.rounds), ("local_epochs", args.local_epochs)) if v}
    training = {k: v for k, v in (("backbone", args.backbone), ("learning_rate", args.lr)) if v}
    base = base.with_changes(min_sites=args.sites, training=base.training.with_overrides(**training), **changes)
    results: dict = {"plan": base.to_dict() | {"sites": args.sites}, "federated": {}}
    with tempfile.TemporaryDirectory(prefix="pneumofl-fl-quality-") as tmp:
        results["centralized"] = reference = centralized(base, Path(tmp))
        print(f"centralized: {reference}", file=sys.stderr, flush=True)
        for partition in args.partitions.split(","):
            db_url = f"sqlite:///{Path(tmp) / f'{partition}.db'}"
            collector = EventCollector([lambda _e: None])  # the live path is part of what is measured
            collector.start()
            try:
                with LocalFederation(
                    db_url,
                    Path(tmp) / partition,
                    sites=args.sites,
                    partition=partition,
                    data_path=str(data),
                    extra_env=collector.env,
                ) as federation:
                    for strategy in args.strategies.split(","):
                        plan = base.with_changes(name=f"{strategy}-{partition}", strategy=strategy)
                        got = federated(plan, federation, db_url)
                        got["ratio"] = round(got.get("best_auroc", 0.0) / reference["best_auroc"], 3)
                        results["federated"].setdefault(partition, {})[strategy] = got
                        print(f"{partition} {strategy}: {got}", file=sys.stderr, flush=True)
            finally:
                collector.stop()
    results["best"] = {
        partition: max(({"strategy": k} | v for k, v in runs.items()), key=lambda r: r.get("ratio", 0.0))
        for partition, runs in results["federated"].items()
    }
    for partition, best in results["best"].items():
        target = 0.95 if partition == "iid" else 0.90
        print(
            f"{partition}: best {best['strategy']} server AUROC {best.get('best_auroc')} = {best.get('ratio')} x "
            f"centralized {reference['best_auroc']} (target >= {target})"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
