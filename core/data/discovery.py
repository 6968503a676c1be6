"""Finding labelled images: a folder layout (NORMAL/PNEUMONIA, optionally under train/val/test) or a CSV manifest."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.data.images import IMAGE_EXTENSIONS, is_image_file

if TYPE_CHECKING:
    from core.config import RunConfig

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
SPLITS = ("train", "val", "test")

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
_LABEL_VALUES = {
    "0": 0, "0.0": 0, "normal": 0, "negative": 0, "false": 0,
    "1": 1, "1.0": 1, "pneumonia": 1, "positive": 1, "true": 1,
}  # fmt: skip
# Files an OS or archive tool leaves behind; never worth a warning.
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
_EXAMPLES = 5


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``label`` 0 = NORMAL, 1 = PNEUMONIA; ``split`` is None when the source gives none."""

    path: Path
    label: int
    split: str | None


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset: ``severity`` "error" blocks training, "warning" does not.

    ``kind`` names the problem for tools (``missing``, ``undecodable``, ``duplicate``, ...; ``dataset`` for the
    dataset as a whole); ``paths`` are the files it is about, every one of them.
    """

    severity: str
    message: str
    kind: str = "dataset"
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataSource:
    """Where the images are: a dataset root folder or a CSV manifest, and how to read the manifest."""

    path: Path
    kind: str = "auto"
    image_column: str = "image"
    label_column: str = "label"
    image_root: Path | None = None

    @classmethod
    def from_config(cls, config: RunConfig, demo_root: Path | None = None) -> DataSource:
        """Build the source a run configuration points at.

        Parameters
        ----------
        config
            With ``demo=True`` the built-in demo dataset is used (generated on first use); otherwise
            ``data_path``, ``data_kind`` and the ``csv_*`` fields.
        demo_root
            Where the demo dataset lives (default: the user cache folder); it is generated there if missing.
        """
        if config.demo:
            from core.data.demo import ensure_demo_dataset

            return cls(path=ensure_demo_dataset(demo_root), kind="folder")
        return cls(
            path=Path(config.data_path).expanduser(),
            kind=config.data_kind,
            image_column=config.csv_image_column,
            label_column=config.csv_label_column,
            image_root=Path(config.csv_image_root).expanduser() if config.csv_image_root else None,
        )

    def resolved_kind(self) -> str:
        """Return "folder" or "csv" ("auto": a ``.csv`` file is a manifest, anything else a folder)."""
        if self.kind != "auto":
            return self.kind
        return "csv" if self.path.suffix.lower() == ".csv" and not self.path.is_dir() else "folder"


@dataclass
class Scan:
    """What :func:`scan` found: usable samples, problems, and images a manifest names that do not exist."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def discover(source: DataSource) -> tuple[list[Sample], list[Problem]]:
    """List the labelled images of ``source`` without opening them.

    Returns
    -------
    tuple
        Samples sorted by path, and the problems found (missing path or columns, unknown labels, missing files, ...).
        Never raises for data problems.
    """
    result = scan(source)
    problems = list(result.problems)
    if result.missing:
        problems.append(Problem("warning", missing_message(source, result.missing)))
    return result.samples, problems


def scan(source: DataSource) -> Scan:
    """Like :func:`discover`, but keep images named by a manifest and not found apart, for the caller to judge."""
    path = source.path
    if not path.exists():
        return Scan(problems=[_error(f"Data path {path} does not exist: choose an existing folder or CSV file.")])
    kind = source.resolved_kind()
    if kind == "csv":
        if not path.is_file():
            return Scan(
                problems=[
                    _error(
                        f"Data path {path} is not a CSV file: choose a manifest file or set the data kind to folder."
                    )
                ]
            )
        return _scan_csv(source)
    if kind != "folder":
        return Scan(problems=[_error(f"Data kind '{kind}' is unknown: use auto, folder or csv.")])
    if not path.is_dir():
        return Scan(
            problems=[
                _error(
                    f"Data path {path} is not a folder: choose the dataset folder, or a .csv "
                    "manifest with data kind csv."
                )
            ]
        )
    return _scan_folder(path)


def missing_message(source: DataSource, missing: list[str]) -> str:
    """Describe images a manifest names that were not found."""
    root = source.image_root or source.path.parent
    examples = ", ".join(missing[:_EXAMPLES])
    more = f" and {len(missing) - _EXAMPLES} more" if len(missing) > _EXAMPLES else ""
    return (
        f"{len(missing)} image(s) listed in {source.path.name} were not found in {root} ({examples}{more}): "
        "check the image folder (csv_image_root) or remove those rows."
    )


def _error(message: str) -> Problem:
    return Problem("error", message)


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower() not in _JUNK_NAMES)


def _class_dirs(folder: Path) -> dict[int, Path]:
    names = {name.lower(): label for label, name in enumerate(CLASS_NAMES)}
    return {names[p.name.lower()]: p for p in _visible_children(folder) if p.is_dir() and p.name.lower() in names}


def _split_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in _visible_children(folder):
        split = _SPLIT_ALIASES.get(child.name.lower())
        if child.is_dir() and split and split not in found:
            found[split] = child
    return found


def _find_layout_root(root: Path) -> Path | None:
    """Return the folder holding split or class folders: ``root``, or one lone subfolder deep (zip archives)."""
    candidate = root
    for _ in range(3):
        if _split_dirs(candidate) or _class_dirs(candidate):
            return candidate
        subdirs = [p for p in _visible_children(candidate) if p.is_dir()]
        if len(subdirs) != 1:
            return None
        candidate = subdirs[0]
    return None


def _scan_folder(root: Path) -> Scan:
    result = Scan()
    layout_root = _find_layout_root(root)
    if layout_root is None:
        result.problems.append(
            _error(
                f"No NORMAL or PNEUMONIA folder found in {root}: arrange the images as ROOT/NORMAL and ROOT/PNEUMONIA, "
                "or ROOT/train|val|test/NORMAL|PNEUMONIA, or use a CSV manifest."
            )
        )
        return result
    splits = _split_dirs(layout_root)
    groups = [(name, folder) for name, folder in splits.items()] if splits else [(None, layout_root)]
    ignored: Counter[str] = Counter()
    for split, folder in groups:
        classes = _class_dirs(folder)
        for child in _visible_children(folder):
            if child.is_dir() and child not in classes.values():
                result.problems.append(
                    Problem("warning", f"Folder {child} is not NORMAL or PNEUMONIA and was ignored.")
                )
        for label, class_dir in sorted(classes.items()):
            for file in sorted(class_dir.rglob("*")):
                if any(part.startswith(".") for part in file.relative_to(class_dir).parts) or not file.is_file():
                    continue
                if is_image_file(file):
                    result.samples.append(Sample(file, label, split))
                elif file.name.lower() not in _JUNK_NAMES:
                    ignored[file.suffix.lower() or "(no extension)"] += 1
    if ignored:
        kinds = ", ".join(f"{count} {suffix}" for suffix, count in ignored.most_common())
        result.problems.append(
            Problem(
                "warning",
                f"Files in {root} that are not {'/'.join(IMAGE_EXTENSIONS)} images "
                f"were ignored ({kinds}): convert them to PNG if they are X-rays.",
            )
        )
    if not result.samples:
        result.problems.append(
            _error(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in the NORMAL/PNEUMONIA "
                f"folders under {layout_root}: add images or choose another folder."
            )
        )
    return result


def _match_column(fieldnames: list[str], wanted: str) -> str | None:
    if wanted in fieldnames:
        return wanted
    lowered = {name.strip().lower(): name for name in fieldnames}
    return lowered.get(wanted.strip().lower())


def _resolve_image(image_root: Path, value: str) -> Path | None:
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = image_root / candidate
    if candidate.suffix.lower() in IMAGE_EXTENSIONS:
        return candidate if candidate.is_file() else None
    # RSNA-style ids carry no extension (and DICOM UIDs contain dots, so the suffix is no guide).
    for extension in (".dcm", ".png", ".jpg", ".jpeg", ".DCM", ".PNG", ".JPG", ".JPEG"):
        with_extension = candidate.with_name(candidate.name + extension)
        if with_extension.is_file():
            return with_extension
    return None


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_EXAMPLES])
    more = f" and {len(rows) - _EXAMPLES} more" if len(rows) > _EXAMPLES else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _scan_csv(source: DataSource) -> Scan:
    result = Scan()
    csv_path, name = source.path, source.path.name
    image_root = source.image_root or csv_path.parent
    if not image_root.is_dir():
        result.problems.append(
            _error(
                f"Image folder {image_root} for {name} does not exist: set csv_image_root to "
                "the folder holding the images."
            )
        )
        return result
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        result.problems.append(_error(f"CSV file {csv_path} could not be read ({exc}): save it as UTF-8 CSV."))
        return result
    if not fieldnames:
        result.problems.append(_error(f"CSV file {csv_path} is empty: it needs a header row and one row per image."))
        return result
    columns = {"csv_image_column": source.image_column, "csv_label_column": source.label_column}
    matched: dict[str, str] = {}
    for setting, wanted in columns.items():
        found = _match_column(fieldnames, wanted)
        if found is None:
            result.problems.append(
                _error(
                    f"{name} has no column '{wanted}' (it has: {', '.join(fieldnames)}): "
                    f"set {setting} to the right column."
                )
            )
        else:
            matched[setting] = found
    if len(matched) < 2:
        return result
    image_col, label_col = matched["csv_image_column"], matched["csv_label_column"]
    split_col = _match_column(fieldnames, "split")

    bad_labels: dict[str, list[int]] = defaultdict(list)
    bad_splits: dict[str, list[int]] = defaultdict(list)
    empty_images: list[int] = []
    chosen: dict[Path, tuple[int, str | None, int]] = {}
    conflicts: dict[Path, list[int]] = defaultdict(list)
    for row_number, row in enumerate(rows, start=2):  # spreadsheet numbering: the header is row 1
        image_value = (row.get(image_col) or "").strip()
        label_value = (row.get(label_col) or "").strip()
        label = _LABEL_VALUES.get(label_value.lower())
        if label is None:
            bad_labels[label_value].append(row_number)
            continue
        if not image_value:
            empty_images.append(row_number)
            continue
        split: str | None = None
        if split_col is not None:
            split_value = (row.get(split_col) or "").strip()
            split = _SPLIT_ALIASES.get(split_value.lower())
            if split_value and split is None:
                bad_splits[split_value].append(row_number)
        path = _resolve_image(image_root, image_value)
        if path is None:
            result.missing.append(image_value)
            continue
        if path in chosen:
            # RSNA lists a patient once per box: repeats are fine, repeats with another label are not.
            if chosen[path][0] != label:
                conflicts[path].extend([chosen[path][2], row_number])
            continue
        chosen[path] = (label, split, row_number)

    if bad_labels:
        listed = "; ".join(f"'{value}' ({_rows_text(r)})" for value, r in list(bad_labels.items())[:_EXAMPLES])
        result.problems.append(
            _error(
                f"Column '{label_col}' of {name} has values that are not a label: {listed}; "
                "use 0/1, NORMAL/PNEUMONIA, negative/positive or true/false."
            )
        )
    if empty_images:
        result.problems.append(
            Problem(
                "warning",
                f"Column '{image_col}' of {name} is empty in {_rows_text(empty_images)}; those rows were skipped.",
            )
        )
    if bad_splits:
        listed = "; ".join(f"'{value}' ({_rows_text(r)})" for value, r in list(bad_splits.items())[:_EXAMPLES])
        result.problems.append(
            Problem(
                "warning",
                f"Column '{split_col}' of {name} has values that are not "
                f"train/val/test: {listed}; those rows were put in train.",
            )
        )
    for path, conflict_rows in conflicts.items():
        result.problems.append(
            Problem(
                "warning",
                f"Image {path.name} is listed in {name} with both labels "
                f"({_rows_text(sorted(set(conflict_rows)))}); it was left out.",
            )
        )
        chosen.pop(path, None)
    result.samples = sorted(
        (Sample(path, label, split) for path, (label, split, _) in chosen.items()), key=lambda s: str(s.path)
    )
    if not result.samples and not result.missing and not bad_labels:
        result.problems.append(
            _error(f"{name} lists no images: add one row per image with columns '{image_col}' and '{label_col}'.")
        )
    return result
