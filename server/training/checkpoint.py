"""Model folders and resumable training checkpoints, never pickled.

A model folder holds `model.safetensors` and `config.json`:

    {"kind": "small_codec", "format_version": 1, "config": {...},
     "weights_sha256": "<sha256 of model.safetensors>", "extra": {...}}

`load_model_folder` checks the kind and the hash, so a truncated or swapped weights file is an
error that names the folder, not a silently wrong model.

A training checkpoint is a model folder plus `training.pt` (optimiser states and the torch RNG,
written with `torch.save`, read with `torch.load(weights_only=True)`) and `state.json` (step and
anything else a resumed run needs). Folders are written beside their target and renamed into
place, so an interrupted write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from continuo.server.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TRAINING_NAME = "training.pt"
STATE_NAME = "state.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder holds: weights, the model's config and free extra information."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    extra: dict[str, Any]


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A model folder plus optimiser states (by name), the torch RNG state and the run state."""

    model: ModelFolder
    optimizers: dict[str, dict[str, Any]]
    torch_rng: torch.Tensor
    state: dict[str, Any]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_model_files(
    folder: Path, state_dict: dict[str, torch.Tensor], kind: str, config: dict[str, Any],
    extra: dict[str, Any] | None,
) -> None:
    weights = folder / WEIGHTS_NAME
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    safetensors.torch.save_file(tensors, weights)
    meta = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "config": config,
        "weights_sha256": file_sha256(weights),
        "extra": extra or {},
    }
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Write a folder atomically: yields an empty folder beside `folder` to fill; on success
    its files are made as readable as the folder (safetensors and torch.save write 0600 files)
    and it replaces `folder` (a previous one is removed); on failure it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        yield tmp
        mode = tmp.stat().st_mode & 0o666
        for path in tmp.iterdir():
            path.chmod(mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def save_model_folder(
    folder: Path, state_dict: dict[str, torch.Tensor], kind: str, config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `folder` (model.safetensors + config.json) atomically; returns the folder."""
    with atomic_folder(folder) as tmp:
        _write_model_files(tmp, state_dict, kind, config, extra)
    return Path(folder)


def export_model_folder(src: Path, dst: Path, kind: str, dtype: torch.dtype | None = None,
                        drop_suffixes: tuple[str, ...] = ()) -> Path:
    """Copy the model folder `src` of `kind` to `dst` for shipping: floating weights stored as
    `dtype` (float16 halves a model; loading casts them back), tensors whose names end with one
    of `drop_suffixes` left out (training-only state the loader can rebuild), `exported_from`,
    `stored_dtype` and `dropped` added to its extra information. Returns dst."""
    stored = load_model_folder(src, kind)
    state = {k: v for k, v in stored.state_dict.items() if not k.endswith(drop_suffixes)}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    info = {**stored.extra, "exported_from": str(src),
            "stored_dtype": str(dtype or "as trained").removeprefix("torch."),
            "dropped": list(drop_suffixes)}
    return save_model_folder(dst, state, kind, stored.config, info)


def _existing(folder: Path) -> Path:
    """The folder, or its `.old` twin when a write was interrupted between the two renames."""
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    if not (folder / CONFIG_NAME).is_file() and (old / CONFIG_NAME).is_file():
        return old
    return folder


def load_model_folder(folder: Path, kind: str,
                      device: str | torch.device = "cpu") -> ModelFolder:
    """Read and verify a model folder written by `save_model_folder` for `kind`; its tensors
    are read straight onto `device`."""
    folder = _existing(folder)
    config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder}: not a model folder (needs {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME})")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        found_kind, config, expected = meta["kind"], meta["config"], meta["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{config_path}: unreadable model config ({err})") from err
    if found_kind != kind:
        raise CheckpointError(f"{folder}: holds a {found_kind!r} model, expected {kind!r}")
    if file_sha256(weights) != expected:
        raise CheckpointError(f"{weights}: content does not match weights_sha256 in "
                              f"{CONFIG_NAME} (corrupt or replaced file)")
    try:
        state_dict = safetensors.torch.load_file(weights, device=str(device))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from err
    return ModelFolder(state_dict, dict(config), dict(meta.get("extra") or {}))


def save_training_checkpoint(
    folder: Path,
    model_state: dict[str, torch.Tensor],
    kind: str,
    config: dict[str, Any],
    optimizers: dict[str, dict[str, Any]],
    state: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint folder atomically (the torch RNG state is taken here)."""
    with atomic_folder(folder) as tmp:
        _write_model_files(tmp, model_state, kind, config, {"step": state.get("step")})
        torch.save({"optimizers": optimizers, "torch_rng": torch.get_rng_state()},
                   tmp / TRAINING_NAME)
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=1, default=str) + "\n",
                                      encoding="utf-8")
    return Path(folder)


def has_checkpoint(folder: Path) -> bool:
    return (_existing(folder) / STATE_NAME).is_file()


def load_training_checkpoint(folder: Path, kind: str) -> TrainingCheckpoint:
    """Read a checkpoint written by `save_training_checkpoint` (no unpickling)."""
    model = load_model_folder(folder, kind)
    folder = _existing(folder)
    training = folder / TRAINING_NAME
    try:
        blob = torch.load(training, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # an object weights_only refuses: never built
        why = [line.strip().split(" Please use")[0]  # not torch's advice to allow it
               for line in str(err).splitlines() if "Unpickler error" in line]
        raise CheckpointError(f"{training}: refused, it holds more than tensors and plain data "
                              f"({why[0] if why else 'not a plain tensor file'})") from err
    except Exception as err:  # torch.load raises runtime errors on damaged files
        raise CheckpointError(f"{training}: unreadable training state ({err})") from err
    try:
        state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
        return TrainingCheckpoint(model, blob["optimizers"], blob["torch_rng"], state)
    except Exception as err:  # a missing file, bad JSON, a blob without its keys
        raise CheckpointError(f"{folder}: unreadable training state ({err!r})") from err
