"""Export a run's evaluated weights as ONNX or TorchScript, verified against torch, with a model card.

The exported graph takes preprocessed images and returns probabilities with the run's temperature baked in,
so any runtime gives what ``pneumofl predict`` gives. Each export is checked before it is kept: the file is
loaded back (onnxruntime or ``torch.jit.load``) and must reproduce torch's probabilities within 1e-4 on the
run's test images (or on seeded random inputs when those images are not on this computer, which the card says).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.audit import kinds, record_safely
from core.config import RunConfig
from core.data.dataset import XrayDataset, collate
from core.data.prepare import prepare_dataset
from core.errors import DataError, PneumoFLError
from core.export.card import build_card, card_markdown
from core.inference.models import ReadingModel, card_path, file_sha256, load_exported_model, load_run_model
from core.persistence import Database
from core.persistence.federation_records import list_sites
from core.persistence.runs import get_run

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
MAX_CHECK_IMAGES = 256
log = logging.getLogger(__name__)


class ProbabilityModel(nn.Module):
    """Preprocessed images ``(N, 3, S, S)`` -> probability of pneumonia ``(N,)``, temperature included."""

    def __init__(self, backbone: nn.Module, temperature: float | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("temperature", torch.tensor(float(temperature or 1.0)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return one probability per image."""
        return torch.sigmoid(self.backbone(image).reshape(-1) / self.temperature)


@dataclass(frozen=True)
class ExportResult:
    """The files written and how the export was checked."""

    model_file: Path
    card_json: Path
    card_markdown: Path
    max_difference: float
    checked_images: int


def export_model(db: Database, run_id: int, file_format: str, out_dir: Path) -> ExportResult:
    """Write ``pneumofl-run{id}.onnx|.pt`` and its card (``.card.json``, ``.card.md``) into ``out_dir``.

    Raises
    ------
    PneumoFLError
        For an unknown format, a run without usable weights (see :func:`load_run_model`), a folder that
        cannot be written, or an export that does not reproduce torch's probabilities.
    """
    if file_format not in FORMATS:
        raise PneumoFLError(f"Unknown export format {file_format!r}: choose {' or '.join(FORMATS)}.")
    source = load_run_model(db, run_id)
    with db.begin() as session:
        run = get_run(session, run_id)
        sites = [name for _, name in list_sites(session, run_id)]
    images, where = _check_images(run.config, source)
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PneumoFLError(f"Cannot create the export folder {out_dir} ({exc.strerror or exc}).") from None
    target = out_dir / f"pneumofl-run{run_id}{FORMATS[file_format]}"
    wrapper = ProbabilityModel(source.backbone, source.temperature).eval()  # type: ignore[arg-type]
    try:
        _write(wrapper, file_format, target, source.image_size)
    except OSError as exc:
        raise PneumoFLError(f"Cannot write {target} ({exc.strerror or exc}).") from None
    verification = {"runtime": _runtime(file_format), "images": len(images), "source": where}
    card = build_card(
        run,
        source.report,
        file_name=target.name,
        file_format=file_format,
        file_sha256=file_sha256(target),
        verification=verification,
        sites=sites,
    )
    json_path, md_path = card_path(target), target.with_name(target.name + ".card.md")
    json_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    # Load it back as a user would (through its card) and compare with torch on the same inputs.
    difference = _max_difference(source, load_exported_model(target), images)
    verification |= {
        "max_abs_difference": difference,
        "tolerance": TOLERANCE,
        "summary": f"{verification['runtime']} reproduces torch's probabilities on {len(images)} {where} "
        f"within {difference:.1e} (tolerance {TOLERANCE:.0e}).",
    }
    if not difference <= TOLERANCE:
        target.unlink(missing_ok=True)
        json_path.unlink(missing_ok=True)
        raise PneumoFLError(
            f"The {file_format} export of run {run_id} differs from torch by {difference:.2e} (more than "
            f"{TOLERANCE:.0e}); nothing was kept. Please report this with the run's backbone ({source.backbone_name})."
        )
    card["verification"] = verification
    json_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    md_path.write_text(card_markdown(card), encoding="utf-8")
    details = {
        "run_id": run_id,
        "format": file_format,
        "file": str(target),
        "file_sha256": card["file"]["sha256"],
        "weights_sha256": source.weights_sha256,
    }
    record_safely(db, kinds.MODEL_EXPORTED, details)
    return ExportResult(target, json_path, md_path, difference, len(images))


def _write(wrapper: ProbabilityModel, file_format: str, target: Path, size: int) -> None:
    example = torch.zeros(2, 3, size, size)
    partial = target.with_name(target.name + ".partial")
    if file_format == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": still the portable format
            traced = torch.jit.trace(wrapper, example, check_trace=False)
        traced.save(str(partial))
    else:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=["image"],
                output_names=["probability"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                verbose=False,
            )
            program.save(str(partial))
    partial.replace(target)


@contextlib.contextmanager
def _quiet_exporter() -> Any:
    """The exporter narrates each step on stdout and warns about internals; none of it is for our users."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check_images(config: dict[str, Any], source: ReadingModel) -> tuple[torch.Tensor, str]:
    """The run's test images (at most :data:`MAX_CHECK_IMAGES`), preprocessed; random inputs without them."""
    try:
        run_config = RunConfig.from_dict(config.get("training", config))
        data = prepare_dataset(run_config.with_overrides(cache_images=False))
        samples = (data.test or data.val)[:MAX_CHECK_IMAGES]
        dataset = XrayDataset(samples, source.image_size, train=False, cache=False)
        batch = collate([dataset[i] for i in range(len(dataset))])
        if len(batch.labels):
            return batch.images, "of the run's test images" if data.test else "of the run's validation images"
    except (DataError, PneumoFLError, KeyError, TypeError) as exc:
        log.info("export check falls back to random inputs: %s", exc)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, source.image_size, source.image_size, generator=generator)
    return images, "seeded random inputs (the run's images are not on this computer)"


def _max_difference(source: ReadingModel, exported: ReadingModel, images: torch.Tensor) -> float:
    worst = 0.0
    for start in range(0, len(images), 32):
        batch = images[start : start + 32]
        worst = max(worst, float((source.probabilities(batch) - exported.probabilities(batch)).abs().max()))
    return worst


def _runtime(file_format: str) -> str:
    if file_format == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"TorchScript (torch {torch.__version__.split('+')[0]})"
