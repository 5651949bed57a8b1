"""Train the real stages from a data folder and a model folder (what `continuo train stage|all`
runs): the token cache first (computed once, shared by the three stages), then each stage.

    train_stages(["semantic", "coarse", "fine"], data, Path("models/piano"),
                 {"semantic": runs / "semantic", ...}, runs / "token_cache",
                 StageOptions(size="small", layout="delay"), LMTrainConfig(steps=20_000))

The model folder gives the tokenizers (`codec/`, `semantic/`, like models/piano); each stage is
sized to them (`model.loading.new_stage`) and trained on crops of its own training window. Under
torchrun only rank 0 builds the cache while the others wait at a barrier; the process group is
joined once and kept for every stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from continuo.server.continuation import stage_folder
from continuo.server.data.manifest import MANIFEST_NAME
from continuo.server.errors import ConfigError, DataError
from continuo.server.model.loading import new_stage
from continuo.server.training.codec_trainer import resolve_device
from continuo.server.training.distributed import Distributed
from continuo.server.training.lm_trainer import LMTrainConfig, LMTrainSummary, train_stage
from continuo.server.training.token_cache import (
    TokenCache,
    ensure_token_cache,
    model_tokenizers,
    open_token_cache,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOptions:
    """How new stages are sized: decoder size, acoustic layout, training window (None: each
    stage's own, 30/10/3 s), the codec bandwidth the tokens are made at, and a model folder
    whose stages new runs start from (`continuation.stage_folder`; None: random weights)."""

    size: str = "small"
    layout: str = "delay"
    window_s: float | None = None
    bandwidth_kbps: float = 6.0
    init_from: Path | None = None


def check_inputs(data_root: Path, model_dir: Path) -> None:
    """DataError / ConfigError naming the folder unless both look usable."""
    if not (Path(data_root) / MANIFEST_NAME).is_file():
        raise DataError(f"{data_root}: not a data folder (no {MANIFEST_NAME}; make one with "
                        "`continuo data piano|folder`)")
    missing = [name for name in ("codec", "semantic") if not (Path(model_dir) / name).is_dir()]
    if missing:
        raise ConfigError(f"{model_dir}: not a model folder (missing {', '.join(missing)}/; "
                          "train them with `continuo train codec|semantic`)")


def prepare_cache(data_root: Path, model_dir: Path, cache_dir: Path, bandwidth_kbps: float,
                  dist_info: Distributed, progress: bool = True) -> TokenCache:
    """The token cache of `data_root` made with `model_dir`'s tokenizers: built or reused by
    rank 0, opened by every rank after a barrier."""
    if dist_info.is_main:
        tokenizers = model_tokenizers(model_dir, bandwidth_kbps=bandwidth_kbps)
        ensure_token_cache(data_root, cache_dir, tokenizers, progress=progress)
    dist_info.barrier()
    return open_token_cache(cache_dir)


def _join(dist_info: Distributed, device_name: str) -> None:
    device = resolve_device(device_name)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    dist_info.init(device)


def train_stages(
    names: Sequence[str],
    data_root: Path,
    model_dir: Path,
    run_dirs: Mapping[str, Path],
    cache_dir: Path,
    options: StageOptions,
    config: LMTrainConfig,
    progress: bool = True,
) -> dict[str, LMTrainSummary]:
    """Train (or resume) each named stage into run_dirs[name], one after another, on the
    shared token cache in cache_dir; returns each stage's summary. `config.crop_seconds` is
    replaced by each stage's training window."""
    check_inputs(data_root, model_dir)
    dist_info = Distributed.from_env()
    _join(dist_info, config.device)
    try:
        cache = prepare_cache(data_root, model_dir, cache_dir, options.bandwidth_kbps,
                              dist_info, progress)
        summaries = {}
        for name in names:
            stage = new_stage(name, cache.meta["tokenizers"], options.size, options.layout,
                              options.window_s)
            start = None if options.init_from is None else stage_folder(options.init_from, name)
            crop = replace(config, crop_seconds=stage.config.window_s, init_from=start)
            if dist_info.is_main:
                log.info("training the %s stage into %s", name, run_dirs[name])
            summaries[name] = train_stage(stage, cache_dir, run_dirs[name], crop, progress)
        return summaries
    finally:
        dist_info.close()
