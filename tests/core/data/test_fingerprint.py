"""The training data's fingerprint and the warnings an image gets when it is not what the model knows."""

from __future__ import annotations

from pydicom.uid import generate_uid

from core.data.fingerprint import (
    checked_fingerprint,
    data_fingerprint,
    describe,
    image_facts,
    image_warnings,
    merge_fingerprints,
)
from tests.imaging import write_folder_dataset
from tests.pacs.studies import chest_image


def test_adult_frontal_training_data_warns_about_a_lateral_a_child_a_ct_and_a_foot(tmp_path):
    study = generate_uid()
    training = [
        chest_image(tmp_path / "train" / f"{n}.dcm", study_uid=study, patient_id="P", view=view, age="045Y", seed=n)
        for n, view in enumerate(["PA", "AP", "PA", "PA"])
    ]
    fingerprint = data_fingerprint(training)
    assert fingerprint["images"] == 4
    assert fingerprint["counts"]["view"] == {"PA": 3, "AP": 1} and fingerprint["counts"]["age_band"] == {"adult": 4}
    assert fingerprint["counts"]["modality"] == {"CR": 4} and fingerprint["sizes"]["width"] == [64, 64, 64]
    low, high = fingerprint["intensity"]["range"]
    assert 0 < low <= high < 255
    assert any("view: PA 3, AP 1" in line for line in describe(fingerprint))

    def warned(**facts: str) -> list[str]:
        known = image_facts(training[0]) | facts
        return image_warnings(known, (low + high) / 2, fingerprint)

    assert warned() == []  # like the training images
    (lateral,) = warned(view="LL")
    assert "lateral view (LL)" in lateral and "frontal" in lateral
    (child,) = warned(age_band="child")
    assert "patient is child" in child and "adult" in child
    assert "modality CT is not a radiograph" in warned(modality="CT")[0]
    assert "body part FOOT is not the chest" in warned(body_part="FOOT")[0]
    assert "outside the training images'" in image_warnings(image_facts(training[0]), 250.0, fingerprint)[0]


def test_png_folders_carry_no_fields_and_never_warn_on_them(tmp_path):
    data = write_folder_dataset(tmp_path / "xrays", per_class=4, size=32)
    paths = sorted(data.rglob("*.png"))
    fingerprint = data_fingerprint(paths)
    assert fingerprint["counts"]["view"] == {"unknown": 8} and fingerprint["counts"]["age_band"] == {"unknown": 8}
    lateral_child = {"modality": "DX", "view": "LL", "body_part": "CHEST", "manufacturer": "X", "age_band": "child"}
    assert image_warnings(lateral_child, None, fingerprint) == []  # unknown training fields: no warning
    assert image_facts(paths[0])["view"] == "unknown"


def test_a_federations_fingerprint_sums_what_sites_sent_and_a_childs_site_widens_it(tmp_path):
    study = generate_uid()
    adults = [chest_image(tmp_path / "a" / f"{n}.dcm", study_uid=study, patient_id="A", seed=n) for n in range(3)]
    children = [
        chest_image(tmp_path / "c" / f"{n}.dcm", study_uid=study, patient_id="C", age="006Y", view="AP", seed=n)
        for n in range(2)
    ]
    north, south = data_fingerprint(adults), data_fingerprint(children)
    merged = merge_fingerprints({"north": checked_fingerprint(north), "south": checked_fingerprint(south)})
    assert merged["images"] == 5 and merged["sites"] == ["north", "south"]
    assert merged["counts"]["age_band"] == {"adult": 3, "child": 2} and merged["counts"]["view"] == {"PA": 3, "AP": 2}
    assert sum(merged["intensity"]["histogram"]) == 5
    assert "sum of sites north, south" in describe(merged)[0]
    # A child is no longer unknown to the federation's model; with the adults' site alone it was.
    child = image_facts(children[0])
    assert image_warnings(child, None, merge_fingerprints({"north": checked_fingerprint(north)}))
    assert image_warnings(child, None, merged) == []


def test_a_received_fingerprint_is_rebuilt_from_counts_and_a_hostile_one_is_left_out(tmp_path):
    sent = data_fingerprint([chest_image(tmp_path / "a.dcm", study_uid=generate_uid(), patient_id="A")])
    sent["patient_ids"] = ["A"]  # anything beyond the coarse counts is not kept
    kept = checked_fingerprint(sent)
    assert kept is not None and "patient_ids" not in kept and kept["counts"]["modality"] == {"CR": 1}
    flood = dict(sent, counts=dict(sent["counts"], manufacturer={f"m{i}" * 50: 1 for i in range(1000)}))
    flooded = checked_fingerprint(flood)
    assert len(flooded["counts"]["manufacturer"]) == 64 and all(len(v) <= 64 for v in flooded["counts"]["manufacturer"])
    for hostile in (
        None,
        "text",
        {"images": 1},
        dict(sent, images=-5),
        dict(sent, intensity={"histogram": [1, 2], "range": [0, 1]}),
        dict(sent, intensity={"histogram": sent["intensity"]["histogram"], "range": [0, float("nan")]}),
        dict(sent, sizes={"width": "wide", "height": []}),
    ):
        assert checked_fingerprint(hostile) is None, hostile
