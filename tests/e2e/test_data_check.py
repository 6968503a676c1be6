"""`pneumofl data check` and `pneumofl train` on a PACS export: every syntax, colour, odd modalities, bad files."""

from __future__ import annotations

import json

import pytest

from tests.core.dicom_factory import UNUSABLE, write_pacs_export
from tests.e2e.test_cli import TINY, pneumofl

KINDS = {
    "report_sr.dcm": "no_pixel_data",
    "cine_3_frames.dcm": "multi_frame",
    "truncated.dcm": "truncated",
    "renamed_text.dcm": "invalid_header",
}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    return write_pacs_export(tmp_path_factory.mktemp("pacs") / "export")


def test_check_lists_each_unusable_file_and_exits_0_when_trainable(pacs, env):
    proc = pneumofl("data", "check", pacs, "--max-bad-fraction", "0.1", env=env, check=0)
    out = proc.stdout
    assert "Images: 44 usable (NORMAL 22, PNEUMONIA 22)" in out
    assert "JPEG 2000 lossless 4" in out and "JPEG extended 2" in out and "JPEG-LS lossless 4" in out
    assert "Colour images converted to grey (luminance): 4" in out
    for name in UNUSABLE:  # one line each, naming the file
        lines = [line for line in out.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("  warning:"), out
    assert "not of a radiograph modality" in out and "ct_slice.dcm" in out and "secondary_capture.dcm" in out


def test_check_refuses_past_max_bad_fraction_and_json_lists_every_file(pacs, env):
    proc = pneumofl("data", "check", pacs, "--format", "json", env=env, check=2)
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["counts"]["errors"] == 1
    assert any(p["kind"] == "too_many_bad" and "4 of 48 images" in p["message"] for p in report["problems"])
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in report["files"] if f["kind"] in KINDS.values()}
    assert {name: f["kind"] for name, f in by_name.items()} == KINDS
    assert all(f["path"] in f["reason"] for f in by_name.values())
    assert report["split_counts"]["train"] == {"NORMAL": 16, "PNEUMONIA": 16}
    assert "cannot be used for training" in proc.stderr


def test_long_problem_lists_show_twenty_and_say_how_to_see_all(tmp_path, env):
    from tests.core.data_helpers import make_folder_dataset

    root = make_folder_dataset(tmp_path / "many", {"": (30, 30)})
    for i in range(25):
        (root / "NORMAL" / f"broken_{i:02d}.png").write_bytes(b"\x89PNG not really")
    out = pneumofl("data", "check", root, env=env, check=2).stdout
    listed = [line for line in out.splitlines() if line.startswith(("  error:", "  warning:"))]
    assert len(listed) == 20 and listed[0].startswith("  error:")  # errors first
    assert "... and 6 more: add --all" in out and "--format json" in out
    everything = pneumofl("data", "check", root, "--all", env=env, check=2).stdout
    assert sum(line.startswith(("  error:", "  warning:")) for line in everything.splitlines()) == 26


def test_train_on_a_pacs_export_mixing_every_syntax_and_png_jpeg(pacs, env):
    proc = pneumofl("train", "--data", pacs, "--epochs", "1", "--max-bad-fraction", "0.1", *TINY, env=env, check=0)
    assert "Run 1: completed" in proc.stdout
    assert "truncated.dcm is truncated" in proc.stderr  # the check's report came first


def test_train_prints_the_problems_before_it_refuses(pacs, env):
    proc = pneumofl("train", "--data", pacs, "--epochs", "1", *TINY, env=env, check=2)
    assert "4 of 48 images" in proc.stderr and "report_sr.dcm holds no image" in proc.stderr
    assert "cannot be used for training: fix the error(s) listed above" in proc.stderr
    assert "Run 1" not in proc.stdout
