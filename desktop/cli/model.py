"""Take a trained model elsewhere: export a run's best weights with a model card.

Examples
--------
  pneumofl model export 12 --format onnx -o exported/
  pneumofl model export 12 --format torchscript -o exported/

Writes pneumofl-run12.onnx (or .pt) with pneumofl-run12.onnx.card.json (read by `pneumofl predict --model`)
and pneumofl-run12.onnx.card.md (for people). The export is loaded back and must give torch's probabilities
within 1e-4 on the run's test images before it is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.cli.common import add_db_option, open_db


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``model export``."""
    model = commands.add_parser(
        "model",
        help="export a run's model (ONNX, TorchScript) with its model card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = model.add_subparsers(dest="model_command", required=True, metavar="{export}")
    p = sub.add_parser("export", help="write the run's best weights as ONNX or TorchScript, with a model card")
    p.add_argument("run_id", type=int)
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the model file and its card")
    add_db_option(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, verify and describe the model."""
    from core.export.exporter import export_model

    db = open_db(args)
    try:
        result = export_model(db, args.run_id, args.format, Path(args.output))
    finally:
        db.close()
    print(f"Model written to {result.model_file}")
    print(f"Model card: {result.card_json} and {result.card_markdown}")
    print(
        f"Checked on {result.checked_images} images: largest difference from torch {result.max_difference:.1e} "
        "(limit 1e-4)."
    )
    print(f"Read images with it: pneumofl predict --model {result.model_file} IMAGES...")
    return 0
