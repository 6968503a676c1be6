"""Keeping a run's model in its database: a resnet18 checkpoint saved and loaded through the artifact store, against
a plain torch.save/torch.load of the same file, in the same process.

Save through the store, as a training run does it: torch.save to the working file, then hand it to the run's
ArtifactKeeper, which reads it and stores it (SHA-256, insert) on its own thread. Two figures: what the training
thread waits for (torch.save + the read), and the time until the bytes are committed (the keeper closed).
Load through the store = fetching it from the database into the hash-named cache file (as a workstation that
never had it does) + torch.load; a second load finds the cache file and only re-hashes it.

Usage: .venv/bin/python tests/bench/artifact_store.py [--db URL] [--repeats 5]
Last line: JSON with the median seconds of each and the ratios (issue 22's target: store / plain <= 1.5 for a local
database, save and load together).
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

import torch

from core.model.backbones import build_backbone
from core.persistence import Database
from core.persistence.artifacts import artifact_file
from core.persistence.keeper import ArtifactKeeper
from core.persistence.runs import create_run


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    state = {"state_dict": build_backbone("resnet18").state_dict(), "epoch": 1, "backbone": "resnet18"}
    with tempfile.TemporaryDirectory(prefix="pneumofl-artifacts-") as tmp:
        folder = Path(tmp)
        db = Database.open(args.db or f"sqlite:///{folder / 'runs.db'}")
        plain = {"save": [], "load": []}
        store = {"save": [], "save_committed": [], "load_fetched": [], "load_cached": []}
        try:
            for repeat in range(args.repeats):
                path = folder / f"plain-{repeat}.ckpt"
                plain["save"].append(timed(lambda path=path: torch.save(state, path)))
                plain["load"].append(timed(lambda path=path: torch.load(path, weights_only=True)))
                with db.begin() as session:
                    run_id = create_run(session, experiment_name=f"bench {repeat}", config={})
                working = folder / f"run-{repeat}" / "best.ckpt"
                working.parent.mkdir()
                # Every repeat saves different bytes (as every run does), so none is stored already.
                state["epoch"] = repeat
                keeper = ArtifactKeeper(db, run_id)
                started = time.perf_counter()
                torch.save(state, working)
                keeper.keep("best", working)
                store["save"].append(time.perf_counter() - started)
                keeper.close()
                store["save_committed"].append(time.perf_counter() - started)
                cache = folder / f"cache-{repeat}"

                def load(run_id: int = run_id, cache: Path = cache) -> None:
                    with db.begin() as session:
                        kept = artifact_file(session, run_id, "best", cache=cache)
                    torch.load(kept, weights_only=True)

                store["load_fetched"].append(timed(load))
                store["load_cached"].append(timed(load))
        finally:
            db.close()
    median = {f"plain_{k}_s": round(statistics.median(v), 4) for k, v in plain.items()}
    median |= {f"store_{k}_s": round(statistics.median(v), 4) for k, v in store.items()}
    size = sum(t.numel() * t.element_size() for t in state["state_dict"].values()) / 1e6
    plain_total = median["plain_save_s"] + median["plain_load_s"]
    summary = median | {
        "checkpoint_mb": round(size, 1),
        "save_ratio": round(median["store_save_s"] / median["plain_save_s"], 3),
        "save_committed_ratio": round(median["store_save_committed_s"] / median["plain_save_s"], 3),
        "load_fetched_ratio": round(median["store_load_fetched_s"] / median["plain_load_s"], 3),
        "load_cached_ratio": round(median["store_load_cached_s"] / median["plain_load_s"], 3),
        # What a run and a later reading on the same workstation wait for; and the worst case, committed then
        # fetched by a workstation that never had the file.
        "save_and_load_ratio": round((median["store_save_s"] + median["store_load_cached_s"]) / plain_total, 3),
        "committed_and_fetched_ratio": round(
            (median["store_save_committed_s"] + median["store_load_fetched_s"]) / plain_total, 3
        ),
    }
    print(
        f"resnet18 checkpoint ({size:.0f} MB), median of {args.repeats}: save {median['plain_save_s']:.3f} s plain vs "
        f"{median['store_save_s']:.3f} s through the store ({median['store_save_committed_s']:.3f} s until "
        f"committed); load {median['plain_load_s']:.3f} s plain vs {median['store_load_fetched_s']:.3f} s fetched "
        f"from the database, {median['store_load_cached_s']:.3f} s cached; save and load together: ratio "
        f"{summary['save_and_load_ratio']} (committed and fetched: {summary['committed_and_fetched_ratio']})"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
