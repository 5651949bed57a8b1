"""Codec training on a tiny data folder (rendered piano + a tone): the loss falls, TensorBoard
events, a checkpoint and best/ are written, a second sitting resumes, Ctrl-C saves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import progression_notes, render_piano, tone
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_small_codec import tiny_config

from continuo.server.errors import ConfigError, DataError
from continuo.server.tokenizers.small_codec import (
    EMA_SUM_SUFFIX,
    KIND,
    SmallCodec,
    SmallCodecConfig,
)
from continuo.server.training.checkpoint import export_model_folder, load_training_checkpoint
from continuo.server.training.codec_trainer import CodecTrainConfig, train_codec

SR = 24000
TINY = tiny_config()  # hop 32 (750 Hz), 4 codebooks of 32


def quick(**overrides: object) -> CodecTrainConfig:
    settings = {"steps": 20, "batch_size": 4, "crop_seconds": 0.25, "learning_rate": 2e-3,
                "warmup_steps": 5, "init_vectors": 512, "eval_every": 10, "eval_clips": 2,
                "eval_seconds": 1.0, "log_every": 1, "device": "cpu"}
    return CodecTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder following the manifest contract: 2 train pieces + a tone, 1 valid piece."""
    root = tmp_path_factory.mktemp("data")
    clips = {
        ("train", "test/c_major"): render_piano(progression_notes()),
        ("train", "test/d_major"): render_piano(progression_notes(transpose=2)),
        ("train", "test/tone"): tone(330.0, 2.0, SR),
        ("valid", "test/f_major"): render_piano(progression_notes(transpose=5)),
    }
    items = []
    for (split, piece), audio in clips.items():
        rel = f"{split}/{piece.split('/')[1]}_000.flac"
        (root / split).mkdir(exist_ok=True)
        sf.write(root / rel, audio, SR, format="FLAC", subtype="PCM_16")
        items.append({"path": rel, "piece": piece, "split": split, "seconds": len(audio) / SR})
    manifest = {"version": 1, "sample_rate": SR, "source": "folder", "items": items,
                "summary": {}, "failures": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_training_lowers_the_loss_writes_logs_checkpoint_best_and_resumes(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    first = train_codec(data_dir, run, TINY, quick(), progress=False)
    assert (first.start_step, first.step, first.stopped_by) == (0, 20, "steps")
    assert 1e-310 * 0.5 != 0.0  # denormals were flushed during training only

    spectral = [v for _, v in scalars(run, "train/spectral")]
    assert len(spectral) == 20
    assert np.mean(spectral[-5:]) < 0.8 * np.mean(spectral[:5])
    # 750 Hz × 5 bits: 3.75 kbps per codebook; 1, 2, 4 codebooks
    assert set(first.last_eval) == {"3.75kbps", "7.5kbps", "15kbps"}
    assert [s for s, _ in scalars(run, "eval/15kbps/si_sdr_db")] == [10, 20]

    ckpt = load_training_checkpoint(run / "checkpoint", "small_codec")
    assert ckpt.state["step"] == 20 and "optimizer" in ckpt.optimizers
    best = SmallCodec.load(run / "best")
    assert best.model.quantizer_initialized and best.config == TINY
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [10, 20]
    assert json.loads((run / "best" / "config.json").read_text())["extra"]["step"] in (10, 20)

    other_architecture = SmallCodecConfig()  # ignored: a resumed run keeps its own
    second = train_codec(data_dir, run, other_architecture, quick(steps=25), progress=False)
    assert (second.start_step, second.step) == (20, 25)
    assert load_training_checkpoint(run / "checkpoint", "small_codec").state["step"] == 25
    assert SmallCodec.load(run / "checkpoint").config == TINY


def test_resume_continues_exactly_where_it_stopped(data_dir: Path, tmp_path: Path) -> None:
    """20 steps in one sitting == 10 + 10 in two (model, optimiser, data order and RNG kept)."""
    config = quick(eval_every=1000)
    train_codec(data_dir, tmp_path / "one", TINY, config, progress=False)
    train_codec(data_dir, tmp_path / "two", TINY, quick(steps=10, eval_every=1000),
                progress=False)
    torch.manual_seed(123)  # whatever the caller's RNG did in between
    train_codec(data_dir, tmp_path / "two", TINY, config, progress=False)
    one = SmallCodec.load(tmp_path / "one" / "checkpoint").model.state_dict()
    two = SmallCodec.load(tmp_path / "two" / "checkpoint").model.state_dict()
    for name, tensor in one.items():
        assert torch.allclose(tensor, two[name], atol=1e-5), name


def test_resume_keeps_the_runs_learning_rate_unless_one_is_given(
    data_dir: Path, tmp_path: Path
) -> None:
    """A resumed sitting runs at the run's own rate; `--lr` on resume changes only the rate."""

    def stored_lr(run: Path) -> float:
        ckpt = load_training_checkpoint(run / "checkpoint", KIND)
        return ckpt.optimizers["optimizer"]["param_groups"][0]["lr"]

    run = tmp_path / "run"
    train_codec(data_dir, run, TINY, quick(steps=4, eval_every=1000), progress=False)
    assert stored_lr(run) == 2e-3
    train_codec(data_dir, run, TINY, quick(steps=6, eval_every=1000, learning_rate=None),
                progress=False)
    assert stored_lr(run) == 2e-3  # not reset to the default of a new run
    train_codec(data_dir, run, TINY, quick(steps=8, eval_every=1000, learning_rate=5e-4),
                progress=False)
    ckpt = load_training_checkpoint(run / "checkpoint", KIND)
    assert stored_lr(run) == 5e-4 and ckpt.state["step"] == 8
    assert ckpt.optimizers["optimizer"]["state"]  # Adam's moments kept, not a fresh optimiser
    fresh = tmp_path / "fresh"
    train_codec(data_dir, fresh, TINY, quick(steps=2, eval_every=1000, learning_rate=None),
                progress=False)
    assert stored_lr(fresh) == 3e-4


def test_discriminator_option_trains_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    config = quick(steps=8, discriminator=True, eval_every=1000)
    summary = train_codec(data_dir, tmp_path / "run", TINY, config, progress=False)
    assert summary.step == 8
    for tag in ("train/adversarial", "train/feature", "train/discriminator"):
        assert all(np.isfinite(v) for _, v in scalars(tmp_path / "run", tag))
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoint", "small_codec")
    assert {"discriminator", "discriminator_optimizer"} <= set(ckpt.optimizers)


def test_empty_valid_split_is_a_data_error(data_dir: Path, tmp_path: Path) -> None:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    manifest["items"] = [i for i in manifest["items"] if i["split"] == "train"]
    for item in manifest["items"]:
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / item["path"]).write_bytes((data_dir / item["path"]).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="valid split is empty"):
        train_codec(tmp_path, tmp_path / "run", TINY, quick(), progress=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_ctrl_c_or_kill_saves_a_checkpoint(data_dir: Path, tmp_path: Path,
                                                signum: int) -> None:
    """`continuo train codec` interrupted by SIGINT (Ctrl-C) or SIGTERM (kill) exits 130 after
    saving its state."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "continuo.server.cli", "train", "codec", str(data_dir),
           "--out", str(run), "--batch-size", "2", "--crop-seconds", "0.25", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = bytearray()

    def read() -> None:  # drain the pipe so the child never blocks on a full one
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            output.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(n) for n in re.findall(rb"(\d+)step \[", bytes(output))]
            if steps and max(steps) >= 3:  # tqdm's counter "12step [00:04, ...": steps done
                break
            time.sleep(0.2)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        reader.join()
    assert proc.returncode == 130, output.decode()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 3
    assert state["train_config"]["batch_size"] == 2


def test_a_sitting_can_train_at_chosen_codebook_counts_only(data_dir: Path,
                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_codec(data_dir, run, TINY, quick(steps=15, eval_every=1000), progress=False)
    drawn = {int(v) for s, v in scalars(run, "train/n_q") if s > 5}  # after the warm-up
    assert drawn == set(TINY.codebook_choices)
    train_codec(data_dir, run, TINY, quick(steps=30, eval_every=1000, train_codebooks=(4,)),
                progress=False)
    assert {int(v) for s, v in scalars(run, "train/n_q") if s > 15} == {4}
    with pytest.raises(ConfigError, match=r"train codebooks \(9,\): the codec has 4"):
        train_codec(data_dir, tmp_path / "bad", TINY, quick(train_codebooks=(9,)),
                    progress=False)


def test_new_run_starts_from_a_codec_folder(data_dir: Path, tmp_path: Path) -> None:
    """A shipped codec (weights + step, no optimiser) carries training to another machine."""
    train_codec(data_dir, tmp_path / "first", TINY, quick(steps=10, eval_every=10),
                progress=False)
    shipped = tmp_path / "shipped"  # exported as models/piano/codec is: float16, no EMA sums
    export_model_folder(tmp_path / "first" / "best", shipped, KIND, torch.float16,
                        (EMA_SUM_SUFFIX,))
    before = SmallCodec.load(shipped).model.state_dict()
    other = SmallCodecConfig()  # the folder's architecture wins
    run = train_codec(data_dir, tmp_path / "second", other,
                      quick(steps=15, eval_every=1000, init_from=shipped), progress=False)
    assert (run.start_step, run.step) == (10, 15)
    after = SmallCodec.load(tmp_path / "second" / "checkpoint")
    assert after.config == TINY
    assert any(not torch.equal(before[k], v) for k, v in after.model.state_dict().items())
