"""Reading images with a recorded run and with its ONNX/TorchScript exports: same numbers, recorded, explained."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
from sqlalchemy import delete, select

from core.config import BACKBONES
from core.data import XrayDataset
from core.data.prepare import prepare_dataset
from core.errors import PneumoFLError
from core.export.exporter import export_model
from core.inference.gradcam import GradCam
from core.inference.models import card_path, load_exported_model, load_run_model
from core.inference.reader import image_paths, read_images, record_readings
from core.model.backbones import build_backbone
from core.persistence import Database
from core.persistence.artifacts import collect_garbage, list_artifacts
from core.persistence.models import artifacts_table, predictions_table
from core.persistence.predictions import list_predictions
from core.persistence.runs import delete_run
from core.training.recorded import train_and_record
from tests.core.conftest import tiny_run_config


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """One small run with temperature scaling, trained once for the module."""
    folder = tmp_path_factory.mktemp("inference")
    config = tiny_run_config(
        tiny_dataset, experiment_name="reader", backbone="small_cnn", epochs=3, temperature_scaling=True
    )
    db = Database.open(f"sqlite:///{folder / 'runs.db'}")
    result = train_and_record(config, db, work_dir=folder / "ckpt")
    assert result.status == "completed", result.error
    yield db, result, config, folder
    db.close()


def test_a_run_reads_its_own_test_images_as_its_final_evaluation_did(trained):
    db, result, config, _ = trained
    model = load_run_model(db, result.run_id)
    data = prepare_dataset(config)
    readings = list(read_images(model, [s.path for s in data.test], "youden"))
    probs = torch.tensor([r.probability for r in readings])
    labels = torch.tensor([s.label for s in data.test])
    stats = result.final_stats
    assert stats["calibration"]["temperature"] is not None and model.temperature == stats["calibration"]["temperature"]
    threshold = stats["operating_points"]["youden"]["threshold"]
    tp = sum(r.decision == "PNEUMONIA" and y == 1 for r, y in zip(readings, labels.tolist()))
    assert tp == stats["operating_points"]["youden"]["test"]["cm_tp"]
    assert all(r.threshold == threshold and r.operating_point == "youden" for r in readings)
    # The same probabilities as the evaluation's (temperature included): the AUROC is identical.
    from torchmetrics.functional.classification import binary_auroc

    assert float(binary_auroc(probs, labels)) == pytest.approx(stats["test"]["auroc"], abs=1e-6)


def test_readings_are_recorded_with_hashes_and_names_never_pixels_or_folders(trained):
    db, result, config, _ = trained
    model = load_run_model(db, result.run_id)
    paths = image_paths([config.data_path])[:5]
    readings = list(read_images(model, paths, "0.5"))
    assert record_readings(db, model, readings) == 5
    with db.begin() as session:
        rows = list_predictions(session, run_id=result.run_id)
    assert {r["file_name"] for r in rows} == {p.name for p in paths}
    assert {r["image_sha256"] for r in rows} == {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert {r["operating_point"] for r in rows} == {"manual"} and {r["threshold"] for r in rows} == {0.5}
    assert all(r["decision"] == ("PNEUMONIA" if r["probability"] > 0.5 else "NORMAL") for r in rows)
    assert all(config.data_path not in str(value) for r in rows for value in r.values())


def test_unreadable_files_get_a_sentence_and_the_rest_are_read(trained, tmp_path):
    db, result, config, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    good = image_paths([config.data_path])[:3]
    readings = list(read_images(load_run_model(db, result.run_id), [good[0], broken, *good[1:]], "youden"))
    assert [r.error is None for r in readings] == [True, False, True, True]
    assert "broken.png" in readings[1].error and readings[1].decision is None


def test_bad_operating_points_and_missing_paths_are_named(trained, tmp_path):
    db, result, _, _ = trained
    model = load_run_model(db, result.run_id)
    with pytest.raises(PneumoFLError, match="'sens99' is neither"):
        model.threshold("sens99")
    with pytest.raises(PneumoFLError, match="between 0 and 1"):
        model.threshold("1.5")
    with pytest.raises(PneumoFLError, match=str(tmp_path / "nowhere")):
        image_paths([tmp_path / "nowhere"])


@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
def test_exports_reproduce_the_run_and_carry_a_card_without_paths(trained, tmp_path, file_format):
    db, result, config, _ = trained
    exported = export_model(db, result.run_id, file_format, tmp_path / "out")
    assert exported.max_difference <= 1e-4 and exported.checked_images == len(prepare_dataset(config).test)
    run_model, file_model = load_run_model(db, result.run_id), load_exported_model(exported.model_file)
    paths = image_paths([config.data_path])
    for point in ("youden", "sens95", "spec95", "0.4"):
        by_run = list(read_images(run_model, paths, point))
        by_file = list(read_images(file_model, paths, point))
        assert max(abs(a.probability - b.probability) for a, b in zip(by_run, by_file)) <= 1e-4
        assert [a.decision for a in by_run] == [b.decision for b in by_file]
    card = json.loads(exported.card_json.read_text())
    assert card["model"]["weights_sha256"] == result.final_stats["model"]["weights_sha256"] == file_model.weights_sha256
    assert card["statistics"]["intervals"]["test"]["auroc"] == result.final_stats["intervals"]["test"]["auroc"]
    assert card["training"]["samples"]["train"]["total"] == len(prepare_dataset(config).train)
    text = exported.card_json.read_text() + exported.card_markdown.read_text()
    assert config.data_path not in text and str(exported.model_file.parent) not in text
    assert "Intended use" in exported.card_markdown.read_text()
    # The training data's fingerprint travels in the card: an exported model warns as its run does.
    fingerprint = result.final_stats["data_fingerprint"]
    assert card["training"]["data_fingerprint"] == fingerprint == file_model.fingerprint and fingerprint["images"] > 0
    assert f"Training data fingerprint ({fingerprint['images']} images)" in exported.card_markdown.read_text()
    assert file_model.explains == (file_format == "torchscript")
    if file_format == "onnx":
        with pytest.raises(PneumoFLError, match="ONNX file, which cannot show where it looked"):
            next(read_images(file_model, paths[:1], cam=True))


def test_an_export_changed_after_writing_or_without_its_card_is_refused(trained, tmp_path):
    db, result, _, _ = trained
    exported = export_model(db, result.run_id, "torchscript", tmp_path)
    exported.model_file.write_bytes(exported.model_file.read_bytes() + b"\0")
    with pytest.raises(PneumoFLError, match="changed after export"):
        load_exported_model(exported.model_file)
    card_path(exported.model_file).unlink()
    with pytest.raises(PneumoFLError, match=r"model card .* is missing"):
        load_exported_model(exported.model_file)


def test_a_runs_weights_come_from_its_database_and_an_old_runs_file_is_adopted_once_it_checks_out(trained):
    db, result, _, folder = trained
    checkpoint = folder / "ckpt" / "best.ckpt"
    saved = checkpoint.read_bytes()
    expected = load_run_model(db, result.run_id).weights_sha256
    try:
        # The working file overwritten (another database's run with the same number) or gone: nothing lost.
        checkpoint.write_bytes(b"another run's weights")
        assert load_run_model(db, result.run_id).weights_sha256 == expected
        # A run recorded before its database kept models: only its file, checked before it is adopted.
        with db.begin() as session:
            session.execute(delete(artifacts_table).where(artifacts_table.c.run_id == result.run_id))
            collect_garbage(session)
        with pytest.raises(PneumoFLError, match="neither in its database nor on this computer"):
            checkpoint.unlink()
            load_run_model(db, result.run_id)
        state = torch.load(io.BytesIO(saved), weights_only=True)
        state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
        torch.save(state, checkpoint)
        with pytest.raises(PneumoFLError, match="does not hold the weights run"):
            load_run_model(db, result.run_id)
        with db.begin() as session:
            assert list_artifacts(session, result.run_id) == [], "a file that failed the check is not adopted"
        checkpoint.write_bytes(saved)
        assert load_run_model(db, result.run_id).weights_sha256 == expected
        with db.begin() as session:
            assert [a.kind for a in list_artifacts(session, result.run_id)] == ["best"]
    finally:
        checkpoint.write_bytes(saved)


def test_deleting_a_run_keeps_its_readings_traceable_by_model_hash(tmp_path, tiny_config):
    db = Database.open(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        config = tiny_config.with_overrides(epochs=1, backbone="small_cnn")
        result = train_and_record(config, db, work_dir=tmp_path / "c")
        model = load_run_model(db, result.run_id)
        record_readings(db, model, read_images(model, image_paths([tiny_config.data_path])[:2], "default"))
        with db.begin() as session:
            delete_run(session, result.run_id)
        with db.begin() as session:
            rows = session.execute(select(predictions_table.c.run_id, predictions_table.c.model_sha256)).all()
        assert rows == [(None, model.weights_sha256)] * 2
    finally:
        db.close()


@pytest.mark.parametrize("name", BACKBONES)
def test_grad_cam_has_a_layer_for_every_backbone_and_leaves_the_model_alone(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = torch.randn(2, 3, 32, 32)
    maps = GradCam(backbone, name).heatmaps(images)
    assert maps.shape == (2, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    # An eval copy: the model keeps training mode and its BatchNorm statistics are untouched.
    assert backbone.training
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_dataset_and_reader_preprocess_identically(trained):
    db, result, config, _ = trained
    model = load_run_model(db, result.run_id)
    sample = prepare_dataset(config).val[0]
    image, _ = XrayDataset([sample], config.image_size, train=False, cache=False)[0]
    (reading,) = read_images(model, [sample.path], "default")
    assert reading.probability == pytest.approx(float(model.probabilities(image[None])[0]), abs=1e-7)
