"""A tiny model folder for continuation tests: tiny random codec (k-means-initialised codebooks),
tiny fitted semantic tokenizer, and the three stages trained for a few steps on rendered piano;
and a preset pointing at it. A test module imports `model_dir_fixture` (the fixture `model_dir`)
and `data_root`, which it uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_token_cache import KBPS, data_root, fit_semantic, varied_codec  # noqa: F401 (fixture)

from continuo.server.model.loading import new_stage
from continuo.server.training.distributed import Distributed
from continuo.server.training.lm_trainer import LMTrainConfig, LMTrainer
from continuo.server.training.token_cache import ensure_token_cache, model_tokenizers

WINDOW_S = 0.48  # 12 semantic tokens, 36 frames: prompt + continuation need several windows
LAYOUTS = {"semantic": "flat", "coarse": "delay", "fine": "flat"}


@pytest.fixture(scope="module", name="model_dir")
def model_dir_fixture(data_root: Path,  # noqa: F811
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    varied_codec(data_root).save(root / "codec")
    fit_semantic(data_root, root / "semantic", clusters=8)
    tokenizers = model_tokenizers(root, bandwidth_kbps=KBPS)
    cache = ensure_token_cache(data_root, tmp_path_factory.mktemp("tokens"), tokenizers, False)
    config = LMTrainConfig(steps=3, batch_size=2, crop_seconds=WINDOW_S, warmup_steps=1,
                           learning_rate=1e-2, eval_windows=2, eval_every=1000, device="cpu")
    for name, layout in LAYOUTS.items():
        stage = new_stage(name, cache.meta["tokenizers"], "tiny", layout, window_s=WINDOW_S)
        LMTrainer(stage, cache.folder, root / f"{name}_lm", config, False, Distributed()).run()
    return root


def write_preset(folder: Path, model_dir: Path, extra: str = "", **sampling: float) -> Path:
    temperature = sampling.get("temperature", 1.0)
    stages = "".join(f"[{n}]\ntemperature = {temperature}\n" for n in LAYOUTS)
    path = folder / "tiny.toml"
    path.write_text(f'model_dir = "{model_dir}"\nbandwidth_kbps = {KBPS}\ncontext_s = 0.5\n'
                    f"{extra}{stages}")
    return path
