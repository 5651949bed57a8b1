"""`continuo demo` (the bundled clip continued by whole bars at its tempo), `continuo continue
--bars`, and `continuo stage export`, through a tiny real model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401

from continuo.server.cli import main
from continuo.server.model.loading import load_stage
from continuo.server.musical_time import Meter, bar_to_sample

SR = 24000


@pytest.fixture(scope="module")
def demo_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model folder with a bundled clip in 3/8 at 120 BPM, like models/piano."""
    root = tmp_path_factory.mktemp("demo") / "model"
    shutil.copytree(model_dir, root)
    sf.write(root / "clip.flac", render_piano(progression_notes())[: 2 * SR], SR)
    (root / "clip.json").write_text(json.dumps({"bpm": 120, "meter": "3/8", "source": "test"}))
    return root


def test_demo_continues_the_clip_by_whole_bars_at_its_tempo(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset = write_preset(tmp_path, demo_dir)
    out = tmp_path / "out"
    argv = ["demo", "--preset", str(preset), "--model-dir", str(demo_dir), "--bars", "2",
            "--out", str(out)]
    assert main(argv) == 0
    audio, sr = sf.read(out / "demo.wav")
    assert sr == SR and len(audio) == bar_to_sample(2, 120, Meter(3, 8), SR) == 36000
    full, _ = sf.read(out / "demo.full.wav")
    assert len(full) == len(audio) + 12 * 960  # the prompt as used (context 0.5 s) + 2 bars
    sidecar = json.loads((out / "demo.json").read_text())
    assert sidecar["tempo"] == {"bars": 2, "bpm": 120.0, "meter": "3/8",
                                "clip": {"bpm": 120, "meter": "3/8", "source": "test"}}
    assert sidecar["continuation_samples"] == 36000
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "2 bars of 3/8 at 120 BPM" in printed and str(out / "demo.wav") in printed


def test_demo_names_a_missing_clip_description(demo_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "model"
    shutil.copytree(demo_dir, broken)
    (broken / "clip.json").write_text('{"bpm": 120}')
    argv = ["demo", "--preset", str(write_preset(tmp_path, broken)), "--model-dir", str(broken),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "clip.json" in capsys.readouterr().err


def test_continue_by_bars_is_exact_and_checks_the_tempo(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset, out = str(write_preset(tmp_path, demo_dir)), tmp_path / "c.wav"
    clip = str(demo_dir / "clip.flac")
    argv = ["continue", clip, "--preset", preset, "--bars", "1", "--bpm", "150", "--meter", "5/8",
            "-o", str(out)]
    assert main(argv) == 0
    assert sf.info(out).frames == 24000  # 5/8 = 2.5 quarter beats of 0.4 s
    assert json.loads(out.with_suffix(".json").read_text())["tempo"]["meter"] == "5/8"
    assert main(["continue", clip, "--preset", preset, "--bars", "2", "-o", str(out)]) == 2
    assert "--bpm" in capsys.readouterr().err
    argv = ["continue", clip, "--preset", preset, "--bars", "2", "--bpm", "9000", "-o", str(out)]
    assert main(argv) == 2
    assert "9000" in capsys.readouterr().err


def test_stage_export_float16_halves_the_stage_and_keeps_its_outputs(
    model_dir: Path, tmp_path: Path
) -> None:
    src, dst = model_dir / "coarse_lm" / "best", tmp_path / "coarse_lm"
    assert main(["stage", "export", str(src), str(dst)]) == 0
    size = (dst / "model.safetensors").stat().st_size
    assert size < 0.6 * (src / "model.safetensors").stat().st_size
    (stage, model), (_, exported) = load_stage(src), load_stage(dst)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 8, (1, stage.n_rows, 20)))
    with torch.no_grad():
        np.testing.assert_allclose(exported(tokens).numpy(), model(tokens).numpy(), atol=2e-2)
    extra = json.loads((dst / "config.json").read_text())["extra"]
    assert extra["stored_dtype"] == "float16" and extra["exported_from"] == str(src)
