"""A run's training state after every completed epoch, and the checks before resuming from it.

At the start of every epoch after the first, :class:`TrainingState` writes Lightning's whole checkpoint (weights,
optimiser and scheduler, the loops' progress, every callback's state) together with the random generators and a
manifest of the data, and hands the file to ``on_saved`` (a recorded run keeps it in its database as its ``last``
artifact). It is written at the start of the next epoch rather than at the end of the last one because only then
has Lightning finished the epoch (the scheduler stepped, the epoch counted): resuming from there is Lightning's
"restarted on epoch start" case, which publishes no epoch twice. When training ends, the file is replaced by the
last epoch's weights alone: a completed run is never resumed, and the optimiser's moments would triple its size.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from core.config import RunConfig
from core.data import PreparedDataset
from core.errors import PneumoFLError
from core.jsonsafe import json_safe
from core.model.checkpoint import save_checkpoint, shared_state

FORMAT = 1
Manifest = dict[str, dict[str, list[int]]]
"""``{split: {path: [label, size, mtime_ns]}}``, paths relative to the data folder where they lie under it."""


def data_manifest(config: RunConfig, data: PreparedDataset) -> Manifest:
    """What a resumed run must find unchanged: every image of every split, with its label, size and time."""
    roots = [Path(p).expanduser().resolve() for p in (config.csv_image_root, config.data_path) if p]
    roots = [r if r.is_dir() else r.parent for r in roots]

    def name(path: Path) -> str:
        resolved = path.expanduser().resolve()
        for root in roots:
            if resolved.is_relative_to(root):
                return resolved.relative_to(root).as_posix()
        return resolved.as_posix()

    def entry(path: Path, label: int) -> list[int]:
        try:
            stat = os.stat(path)
        except OSError:
            return [label, -1, -1]
        return [label, stat.st_size, stat.st_mtime_ns]

    splits = {"train": data.train, "val": data.val, "test": data.test}
    return {split: {name(s.path): entry(s.path, s.label) for s in samples} for split, samples in splits.items()}


def manifest_changes(recorded: Manifest, now: Manifest) -> list[str]:
    """A sentence per split whose images differ between ``recorded`` and ``now`` (empty: unchanged)."""
    changes = []
    for split in ("train", "val", "test"):
        before, after = recorded.get(split, {}), now.get(split, {})
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        relabelled = sorted(p for p in set(before) & set(after) if before[p][0] != after[p][0])
        altered = sorted(p for p in set(before) & set(after) if before[p][1:] != after[p][1:] and p not in relabelled)
        parts = [
            f"{len(paths)} {what} (first: {paths[0]})"
            for paths, what in (
                (added, "added"),
                (removed, "removed"),
                (relabelled, "relabelled"),
                (altered, "changed in size or modification time"),
            )
            if paths
        ]
        if parts:
            changes.append(f"{split} split: {', '.join(parts)}")
    return changes


def _rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any], loader_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState(pl.Callback):
    """Keeps the run's whole training state at ``path`` after every completed epoch (see the module docstring).

    Parameters
    ----------
    path
        The state file; replaced atomically, so a kill mid-write leaves the previous one.
    loader_generator
        The training loader's shuffle generator: restored with the others, so epochs after a resume draw the
        same batches as an uninterrupted run would.
    manifest
        The data the run trains on (see :func:`data_manifest`), checked before resuming.
    config
        The run's configuration as recorded, checked before resuming.
    on_saved
        Called with ``path`` after each write (the database keeps the file).
    """

    def __init__(
        self,
        path: Path,
        loader_generator: torch.Generator,
        manifest: Manifest,
        config: dict[str, Any],
        on_saved: Callable[[Path], None] | None = None,
    ) -> None:
        self.path, self.loader_generator, self.on_saved = path, loader_generator, on_saved
        self.manifest, self.config = manifest, config
        self._resumed_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """The random generators and the data manifest, as of the epoch boundary being saved."""
        rng = _rng_state(self.loader_generator)
        return {"format": FORMAT, "rng": rng, "manifest": self.manifest, "config": self.config}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put every random generator back where the interrupted run had it."""
        _restore_rng(state_dict["rng"], self.loader_generator)
        self._resumed_epoch = -1  # set properly once the trainer's epoch is known (on_train_start)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch a resumed run starts at: its state is already kept."""
        if self._resumed_epoch is not None:
            self._resumed_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the state of the epochs completed so far."""
        if trainer.current_epoch == 0 or trainer.current_epoch == self._resumed_epoch:
            return
        # Lightning resets the epoch loop's per-epoch counters only after this hook; saved as they are, a resumed
        # run would find the new epoch's batches already done. Reset them now, as Lightning is about to.
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_loop.batch_progress.reset_on_run()
        epoch_loop.scheduler_progress.reset_on_run()
        epoch_loop.automatic_optimization.optim_progress.reset_on_run()
        epoch_loop.val_loop.batch_progress.total.reset()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)
        partial.replace(self.path)
        if self.on_saved is not None:
            self.on_saved(self.path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Training is over: keep the last epoch's weights instead of the state."""
        backbone = str(pl_module.hparams.get("backbone", ""))
        save_checkpoint(self.path, shared_state(pl_module), trainer.current_epoch, backbone)
        if self.on_saved is not None:
            self.on_saved(self.path)


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run can continue: after ``epochs_completed`` epochs and ``global_step`` steps."""

    path: Path
    epochs_completed: int
    global_step: int
    best_epoch: int | None
    manifest: Manifest
    config: dict[str, Any]


def read_resume_point(path: Path) -> ResumePoint:
    """Read a state file written by :class:`TrainingState` (tensors and plain values only: never code).

    Raises
    ------
    PneumoFLError
        When the file is not such a state (a completed run's weights, another program's file).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise PneumoFLError(f"The training state {path} could not be read ({exc}).") from None
    callbacks = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    state = callbacks.get(TrainingState.__qualname__)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PneumoFLError(f"{path} holds no training state this version of PneumoFL can resume from.")
    collector = next((v for k, v in callbacks.items() if k.startswith("MetricsCollector")), {})
    return ResumePoint(
        path=path,
        epochs_completed=int(checkpoint["epoch"]),
        global_step=int(checkpoint["global_step"]),
        best_epoch=collector.get("best_epoch"),
        manifest=state["manifest"],
        config=state["config"],
    )


def config_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``field: before -> now`` for each setting of ``recorded`` that ``now`` differs in (empty: unchanged)."""
    before, after = (json.loads(json.dumps(json_safe(dict(d)))) for d in (recorded, now))  # as the database has it
    return [f"{name}: {value!r} -> {after.get(name)!r}" for name, value in before.items() if after.get(name) != value]
