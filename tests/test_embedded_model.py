"""The committed default model (models/piano): every weight file matches the sha256 its config
records, everything loads from safetensors + JSON alone, it fits the 40 MB budget, and it
continues its bundled clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from continuo.server.audio import load_audio
from continuo.server.continuation import STAGE_FOLDERS, Continuation
from continuo.server.demo import ClipInfo
from continuo.server.model.loading import load_stage
from continuo.server.paths import DEFAULT_MODEL_DIR
from continuo.server.training.checkpoint import file_sha256

MAX_MODEL_MB = 40.0
FOLDERS = ["codec", "semantic", *STAGE_FOLDERS.values()]


@pytest.mark.parametrize("name", FOLDERS)
def test_each_weight_file_matches_its_recorded_hash(name: str) -> None:
    folder = DEFAULT_MODEL_DIR / name
    config = json.loads((folder / "config.json").read_text())
    weights = [p for p in folder.iterdir() if p.suffix == ".safetensors"]
    assert len(weights) == 1, f"{folder}: expected one safetensors file"
    recorded = config["weights_sha256"] if "weights_sha256" in config else config["sha256"]
    assert file_sha256(weights[0]) == recorded
    with safe_open(weights[0], framework="pt") as f:  # plain tensors, no pickle
        assert len(list(f.keys())) > 0


def test_model_fits_its_budget_and_ships_no_pickles() -> None:
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) / 1e6 <= MAX_MODEL_MB
    assert not [p for p in files if p.suffix in {".pt", ".pth", ".pkl", ".ckpt", ".th"}]


def test_stages_are_the_realtime_kind() -> None:
    for name, folder in STAGE_FOLDERS.items():
        stage, model = load_stage(DEFAULT_MODEL_DIR / folder)  # weights_sha256 checked
        assert stage.name == name
        if name != "semantic":
            assert stage.config.layout == "delay"
        assert not model.training


def test_the_bundled_clip_is_held_out_and_continues() -> None:
    clip = ClipInfo.load(DEFAULT_MODEL_DIR)
    assert clip.about["split"] in {"valid", "test"}
    pipeline = Continuation("piano")
    audio = load_audio(clip.path, sample_rate=pipeline.sample_rate)
    seconds = clip.bars_seconds(1, pipeline.sample_rate)  # one bar of 3/8 at 120 BPM: 0.75 s
    result = pipeline.generate(audio.samples[0], audio.sample_rate, seconds, seed=0)
    assert result.audio.shape == (18000,)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 1e-3
