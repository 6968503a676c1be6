"""The default demo run, exactly as `pneumofl train --demo` does it, into a throwaway SQLite database.

Usage: .venv/bin/python tests/bench/demo_quality.py
Last line: JSON with the best checkpoint's validation AUROC, sensitivity and specificity, and wall seconds.
Target: val AUROC >= 0.90 in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.config import demo_config
from core.persistence import Database
from core.training.recorded import train_and_record


def main() -> None:
    config = demo_config()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(f"sqlite:///{tmp}/bench.db")
        started = time.perf_counter()
        result = train_and_record(config, db, work_dir=Path(tmp) / "ckpt")
        wall = time.perf_counter() - started
        db.close()
    val, test = result.final_stats.get("val", {}), result.final_stats.get("test", {})
    print(f"status={result.status} epochs={result.epochs_completed} best_epoch={result.best_epoch}")
    print(
        json.dumps(
            {
                "status": result.status,
                "epochs": result.epochs_completed,
                "image_size": config.image_size,
                "backbone": config.backbone,
                "val_auroc": round(val.get("auroc", float("nan")), 4),
                "val_sensitivity": round(val.get("recall", float("nan")), 4),
                "val_specificity": round(val.get("specificity", float("nan")), 4),
                "test_auroc": round(test.get("auroc", float("nan")), 4),
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
