"""A model that reads images: a recorded run's best weights, or an exported file with its model card.

Both give the same probabilities for the same image: the run's temperature (when it fitted one) is applied
here exactly as the export bakes it in, and the thresholds of the operating points come from the same final
statistics (the run's, or the card's copy of them).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import PneumoFLError
from core.model.checkpoint import load_backbone, run_folder
from core.persistence import Database
from core.persistence.artifacts import artifact_file, keep_file
from core.persistence.metric_reads import run_report
from core.persistence.runs import get_run
from core.reporting import RunReport
from core.stats.calibration import apply_temperature
from core.stats.operating_points import OPERATING_POINTS

CARD_SUFFIX = ".card.json"


@dataclass
class ReadingModel:
    """Everything needed to turn preprocessed images into probabilities and decisions.

    ``backbone`` (an ``nn.Module`` giving ``(N, 1)`` logits) is set for runs and TorchScript exports, and is
    what Grad-CAM needs; an ONNX export runs in ``onnx_session`` and has none.
    """

    name: str
    backbone_name: str
    image_size: int
    weights_sha256: str
    report: RunReport = field(default_factory=RunReport)
    run_id: int | None = None
    temperature: float | None = None
    backbone: nn.Module | None = None
    onnx_session: Any = None
    card: dict[str, Any] | None = field(default=None, repr=False)
    fingerprint: dict[str, Any] | None = field(default=None, repr=False)  # its training data (core.data.fingerprint)

    @property
    def explains(self) -> bool:
        """Whether Grad-CAM heatmaps can be computed (it needs the model's layers)."""
        return self.backbone is not None

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Probability of pneumonia of each preprocessed image ``(N, 3, S, S)``."""
        if self.onnx_session is not None:
            name = self.onnx_session.get_inputs()[0].name
            output = self.onnx_session.run(None, {name: images.numpy()})[0]
            return torch.from_numpy(output).float().reshape(-1)
        assert self.backbone is not None
        return apply_temperature(self.backbone(images).float().reshape(-1), self.temperature)

    def threshold(self, operating_point: str) -> tuple[str, float]:
        """``(label, threshold)`` of an operating point: a name or a number between 0 and 1.

        Names are ``youden``, ``sens95``, ``spec95`` (chosen on validation) and ``default`` (the run's
        configured threshold); a number is used as given and labelled ``manual``.

        Raises
        ------
        PneumoFLError
            For an unknown name, a number out of range, or a point the model's statistics do not have.
        """
        points = self.report.operating_points
        if operating_point in OPERATING_POINTS:
            if operating_point not in points:
                raise PneumoFLError(
                    f"{self.name} has no {operating_point} operating point (its validation split had one class, "
                    "or it was trained before operating points were recorded); give a threshold such as 0.5."
                )
            return operating_point, points[operating_point].threshold
        if operating_point == "default":
            return "default", self.report.threshold_or(0.5)
        try:
            value = float(operating_point)
        except ValueError:
            value = math.nan
        if not 0 < value < 1:
            choices = ", ".join((*OPERATING_POINTS, "default"))
            raise PneumoFLError(
                f"Operating point {operating_point!r} is neither one of {choices} nor a threshold between 0 and 1."
            )
        return "manual", value


def load_run_model(db: Database, run_id: int) -> ReadingModel:
    """The best weights of recorded run ``run_id``, checked against the fingerprint its statistics hold.

    They come from the run's database (:mod:`core.persistence.artifacts`). A run recorded before its database
    kept models has its file adopted on first use, once its fingerprint matches.

    Raises
    ------
    PneumoFLError
        When the run does not exist, kept no weights (not completed, or a federated site's run), or its
        weights are neither in its database nor on this computer, or are not the ones that were evaluated.
    """
    with db.begin() as session:
        run = get_run(session, run_id)
        report = run_report(session, run_id)
        stored = artifact_file(session, run_id, "best")
    record = report.model
    if record is None:
        why = (
            "a federated site's run keeps no model: use the federation's server run"
            if run.role == "site"
            else (f"it is {run.status} and kept no evaluated model (runs recorded before PneumoFL 0.2 did not either)")
        )
        raise PneumoFLError(f"Run {run_id} cannot read images: {why}.")
    path = stored or Path(record.checkpoint or run_folder(run_id) / "best.ckpt")
    if not path.is_file():
        raise PneumoFLError(
            f"The weights of run {run_id} are neither in its database nor on this computer (looked for {path}). "
            f"On the computer that trained it, `pneumofl predict --run {run_id} ...` once keeps them in the database."
        )
    module, name, fingerprint = load_backbone(path, record.backbone or None)
    if fingerprint != record.weights_sha256:
        where = f"the database's copy ({path.name})" if stored else str(path)
        raise PneumoFLError(
            f"{where} does not hold the weights run {run_id} was evaluated with (was it overwritten by another run "
            "or another database?). Train the run again or use an exported model."
        )
    if stored is None:  # a run from before its database kept models: adopt the file, now that it checked out
        keep_file(db, run_id, "best", path)
    return ReadingModel(
        name=f"run {run_id} ({run.experiment_name})",
        backbone_name=name,
        image_size=record.image_size,
        weights_sha256=record.weights_sha256,
        report=report,
        run_id=run_id,
        temperature=report.calibration.temperature if report.calibration else None,
        backbone=module,
        fingerprint=(run.final_stats or {}).get("data_fingerprint"),
    )


def card_path(model_file: Path) -> Path:
    """Where the model card of an exported file is: ``model.onnx`` -> ``model.onnx.card.json``."""
    return model_file.with_name(model_file.name + CARD_SUFFIX)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_exported_model(path: Path) -> ReadingModel:
    """An exported ``.onnx`` or ``.pt`` (TorchScript) file, with the card written next to it.

    Raises
    ------
    PneumoFLError
        Naming the file, when it or its card is missing, the card does not describe this very file, or the
        file cannot be loaded.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PneumoFLError(f"Model file {path} does not exist.")
    card_file = card_path(path)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PneumoFLError(
            f"The model card {card_file} is missing: an exported model is only used with its card "
            "(thresholds, preprocessing). Export it again with `pneumofl model export`."
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumoFLError(f"The model card {card_file} cannot be read ({exc}). Export the model again.") from None
    if card.get("file", {}).get("sha256") != file_sha256(path):
        raise PneumoFLError(
            f"{path} is not the file its card {card_file} describes (the SHA-256 differs): it was changed "
            "after export. Export the model again."
        )
    model = card["model"]
    common: dict[str, Any] = {
        "name": path.name,
        "backbone_name": model["backbone"],
        "image_size": int(model["input_size"]),
        "weights_sha256": model["weights_sha256"],
        "report": RunReport.from_dict(card.get("statistics")),
        "run_id": None,
        "card": card,
        "fingerprint": card.get("training", {}).get("data_fingerprint"),  # an exported model warns as its run does
    }
    if path.suffix == ".onnx":
        return ReadingModel(**common, onnx_session=_onnx_session(path))
    backbone = _backbone_from_torchscript(path, model["backbone"])
    return ReadingModel(**common, temperature=model.get("temperature"), backbone=backbone)


def _onnx_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not for radiologists
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise PneumoFLError(f"Model file {path} could not be loaded by onnxruntime ({exc}).") from None


def _backbone_from_torchscript(path: Path, backbone: str) -> nn.Module:
    """Rebuild the eager backbone from a TorchScript export's weights (Grad-CAM needs real modules)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": still the portable format
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure is the file's fault
        raise PneumoFLError(f"Model file {path} could not be loaded as TorchScript ({exc}).") from None
    state = {k.removeprefix("backbone."): v for k, v in scripted.state_dict().items() if k.startswith("backbone.")}
    from core.model.backbones import build_backbone

    module = build_backbone(backbone)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise PneumoFLError(f"Model file {path} does not hold a {backbone} ({exc}).") from None
    return module.eval()
