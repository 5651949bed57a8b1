"""The three real stages by name: new ones sized to a pair of tokenizers, and trained ones
rebuilt from their model folder alone.

A stage's model folder (kind "lm_stage", written by the trainer as `best/` and inside
`checkpoint/`) holds `model.safetensors` and `config.json` whose "config" is the stage record:

    {"stage": "coarse", "decoder": {...DecoderConfig...}, "stage_config": {...config_to_dict...}}

`load_stage(folder)` reads only that (safetensors + JSON, kind and weights hash checked) and
returns the stage and its model with the trained weights. Stages that are not one of the three
(test toys) are recorded without "stage_config" and can be trained but not rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from continuo.server.errors import CheckpointError, ConfigError, ContinuoError
from continuo.server.model.device import resolve_device
from continuo.server.model.stage_api import Stage
from continuo.server.model.stage_config import (
    LAYOUTS,
    CoarseStageConfig,
    FineStageConfig,
    SemanticStageConfig,
    config_from_dict,
    config_to_dict,
)
from continuo.server.model.stages import CoarseStage, FineStage, SemanticStage
from continuo.server.training.checkpoint import load_model_folder

KIND = "lm_stage"
STAGES: dict[str, tuple[type, type]] = {
    "semantic": (SemanticStage, SemanticStageConfig),
    "coarse": (CoarseStage, CoarseStageConfig),
    "fine": (FineStage, FineStageConfig),
}
STAGE_NAMES = tuple(STAGES)
DEFAULT_N_COARSE = 3  # Q' of the stage configs' default (3 of 8 codebooks)
SEMANTIC_DROPOUT = 0.15  # coarse windows trained without semantics: the acoustic-only ablation


def stage_to_dict(stage: Stage) -> dict[str, Any]:
    """The stage record (JSON-able) a model folder stores as its config (see the module doc)."""
    record: dict[str, Any] = {"stage": stage.name, "decoder": stage.decoder_config.to_dict()}
    known = STAGES.get(stage.name)
    if known is not None and type(stage) is known[0]:
        record["stage_config"] = config_to_dict(stage.config)
    return json.loads(json.dumps(record))  # tuples → lists, as they come back from disk


def stage_from_dict(record: Mapping[str, Any], where: str = "stage record") -> Stage:
    """Inverse of `stage_to_dict` for the real stages; CheckpointError naming `where`."""
    name = record.get("stage")
    if name not in STAGES or "stage_config" not in record:
        raise CheckpointError(f"{where}: not one of the stages {STAGE_NAMES} with a stored "
                              f"stage_config (found stage {name!r})")
    stage_cls, config_cls = STAGES[name]
    try:
        return stage_cls(config_from_dict(config_cls, record["stage_config"]))
    except (ContinuoError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid {name} stage config ({err})") from err


def load_stage(folder: Path, device: str | torch.device = "cpu") -> tuple[Stage, nn.Module]:
    """The stage and its trained model (eval mode, on `device`) from a model folder of kind
    "lm_stage" (e.g. RUN/best); CheckpointError naming the folder if it is not one, or is
    damaged; ConfigError for a device that is not available (`resolve_device`). The weights are
    read straight onto the device and the model is built there."""
    device = resolve_device(str(device))
    stored = load_model_folder(folder, KIND, device=device)
    stage = stage_from_dict(stored.config, str(folder))
    with torch.device(device):
        model = stage.build_model()
    try:
        model.load_state_dict(stored.state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"{folder}: weights do not fit the {stage.name} stage's model "
                              f"({err})") from err
    return stage, model.eval()


def _int_rate(rate_hz: float, what: str) -> int:
    if abs(rate_hz - round(rate_hz)) > 1e-6:
        raise ConfigError(f"{what} {rate_hz:g} Hz must be a whole number of Hz for the stages")
    return round(rate_hz)


def new_stage(
    name: str,
    tokenizers: Mapping[str, Any],
    size: str = "small",
    layout: str = "delay",
    window_s: float | None = None,
) -> Stage:
    """A fresh stage `name` sized to the tokenizers a token cache was made with.

    tokenizers: a token cache's meta["tokenizers"] ({"codec": {frame_rate, n_codebooks,
    codebook_size}, "semantic": {frame_rate, vocab_size}}). size: tiny/small/paper decoder;
    layout: flat/delay (acoustic stages); window_s: the training window (default: the
    stage's, 30/10/3 s; the fine stage's context is then a third of it, at most 1 s).
    """
    if name not in STAGES:
        raise ConfigError(f"stage must be one of {STAGE_NAMES}, got {name!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    try:
        codec, semantic = tokenizers["codec"], tokenizers["semantic"]
        semantic_rate = _int_rate(float(semantic["frame_rate"]), "semantic rate")
        values: dict[str, Any] = {} if window_s is None else {"window_s": window_s}
        if name == "semantic":
            config = SemanticStageConfig.preset(size, vocab_size=int(semantic["vocab_size"]),
                                                rate_hz=semantic_rate, **values)
            return SemanticStage(config)
        frame_rate = _int_rate(float(codec["frame_rate"]), "codec frame rate")
        n_codebooks = int(codec["n_codebooks"])
        values.update(
            layout=layout, n_codebooks=n_codebooks,
            n_coarse=min(DEFAULT_N_COARSE, n_codebooks - 1),
            codebook_size=int(codec["codebook_size"]), frame_rate_hz=frame_rate,
            semantic_vocab_size=int(semantic["vocab_size"]), semantic_rate_hz=semantic_rate,
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"tokenizer description lacks {err} (needs codec frame_rate, "
                          "n_codebooks, codebook_size; semantic frame_rate, vocab_size)") from err
    if name == "coarse":
        return CoarseStage(CoarseStageConfig.preset(size, semantic_dropout=SEMANTIC_DROPOUT,
                                                    **values))
    if window_s is not None:
        values["context_s"] = round(min(1.0, window_s / 3) * frame_rate) / frame_rate
    return FineStage(FineStageConfig.preset(size, **values))
