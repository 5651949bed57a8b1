"""LM training on synthetic token caches with tiny decoders: collation, LR schedule, learning,
resume, checkpoints, and DDP on 2 CPU processes matching one process on the same global batch."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_fixtures import CoarseToyStage, SemanticToyStage, synthetic_cache

from continuo.server.errors import CheckpointError, ConfigError
from continuo.server.model.stage_api import IGNORE_INDEX, Stage, TrainingExample
from continuo.server.training.checkpoint import load_model_folder
from continuo.server.training.lm_trainer import (
    KIND,
    Distributed,
    LMTrainConfig,
    LMTrainer,
    collate,
    lr_factor,
)

TESTS = Path(__file__).parent
SINGLE = Distributed()  # one process, whatever the environment says


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_cache(tmp_path_factory.mktemp("lm") / "tokens")


def config(**overrides: object) -> LMTrainConfig:
    base = {"steps": 6, "batch_size": 4, "crop_seconds": 1.0, "warmup_steps": 2,
            "learning_rate": 3e-3, "eval_windows": 4, "eval_every": 1000, "device": "cpu"}
    return LMTrainConfig(**{**base, **overrides})


def test_toy_stages_follow_the_protocol() -> None:
    assert isinstance(SemanticToyStage(), Stage) and isinstance(CoarseToyStage(), Stage)


def test_collate_pads_inputs_and_ignores_padded_targets() -> None:
    a = TrainingExample(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4]))
    b = TrainingExample(torch.tensor([5]), torch.tensor([IGNORE_INDEX]))
    inputs, targets = collate([a, b])
    assert inputs.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert targets.tolist() == [[2, 3, 4], [IGNORE_INDEX] * 3]


def test_lr_schedule_warms_up_linearly_then_decays_on_a_cosine() -> None:
    f = [lr_factor(s, warmup_steps=4, decay_steps=14, min_ratio=0.1) for s in range(16)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0) and f[9] == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert all(x > y for x, y in itertools.pairwise(f[4:15]))
    assert f[14] == f[15] == pytest.approx(0.1)
    assert lr_factor(100, warmup_steps=4, decay_steps=None, min_ratio=0.1) == 1.0


def test_trainer_applies_the_schedule_to_the_optimizer(cache: Path, tmp_path: Path) -> None:
    c = config(steps=5, warmup_steps=2, decay_steps=5, min_lr_ratio=0.0)
    trainer = LMTrainer(SemanticToyStage(), cache, tmp_path / "run", c, False, SINGLE)
    lrs = [trainer.train_step()["lr"] for _ in range(5)]
    expected = [c.learning_rate * lr_factor(s, 2, 5, 0.0) for s in range(5)]
    assert lrs == pytest.approx(expected)
    assert lrs[1] == pytest.approx(c.learning_rate)
    assert lrs[4] == pytest.approx(c.learning_rate * 0.5 * (1 + math.cos(math.pi * 2 / 3)))


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        LMTrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="amp"):
        LMTrainConfig(amp="fp8")


def test_training_lowers_the_loss_and_writes_run_files(cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    c = config(steps=40, batch_size=8, eval_every=20, log_every=5)
    trainer = LMTrainer(CoarseToyStage(), cache, run, c, False, SINGLE)
    first = trainer.evaluate()
    summary = trainer.run()
    assert summary.stopped_by == "steps" and summary.step == 40
    assert summary.valid_loss < 0.5 * first, (first, summary.valid_loss)
    best = load_model_folder(run / "best", KIND)
    assert best.extra["stage"] == "coarse_toy" and best.extra["valid_loss"] == summary.valid_loss
    lines = (run / "valid.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [20, 40]
    assert any((run / "tb").iterdir())


def test_resume_continues_from_the_saved_step_like_an_uninterrupted_run(
    cache: Path, tmp_path: Path
) -> None:
    stage = SemanticToyStage(dropout=0.1)  # the RNG is part of the resumed state
    whole = LMTrainer(stage, cache, tmp_path / "whole", config(decay_steps=6), False, SINGLE)
    whole_losses = [whole.train_step()["loss"] for _ in range(6)]

    first = LMTrainer(stage, cache, tmp_path / "split", config(steps=3, decay_steps=6), False,
                      SINGLE)
    assert first.run().step == 3
    torch.manual_seed(1234)  # what the process did in between must not matter
    second = LMTrainer(stage, cache, tmp_path / "split", config(decay_steps=6), False, SINGLE)
    assert second.step == 3
    resumed_losses = [second.train_step()["loss"] for _ in range(3)]
    assert resumed_losses == pytest.approx(whole_losses[3:], rel=1e-6)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value, msg=name)


def test_resume_refuses_a_checkpoint_of_another_stage(cache: Path, tmp_path: Path) -> None:
    LMTrainer(SemanticToyStage(), cache, tmp_path, config(steps=1), False, SINGLE).run()
    with pytest.raises(CheckpointError, match="semantic_toy"):
        LMTrainer(CoarseToyStage(), cache, tmp_path, config(steps=2), False, SINGLE)


def test_bf16_autocast_on_cpu_trains(cache: Path, tmp_path: Path) -> None:
    trainer = LMTrainer(SemanticToyStage(), cache, tmp_path, config(amp="bf16"), False, SINGLE)
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)


@pytest.mark.timeout(120)
def test_ddp_on_two_processes_matches_one_process_on_the_same_global_batch(
    tmp_path: Path,
) -> None:
    # Items of 1.2–1.8 s under 2 s crops: whole items of different lengths, so rows are padded
    # and the ranks hold different numbers of target tokens.
    cache = synthetic_cache(tmp_path / "short", n_items=8, seconds=1.5)
    steps, per_rank, crop_s = 4, 3, 2.0
    out = tmp_path / "ddp_losses.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS),
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}  # loopback
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "lm_ddp_worker.py"), str(cache), str(tmp_path / "ddp"), str(steps),
           str(per_rank), str(crop_s), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    where = [line for line in done.stderr.splitlines()  # how far each rank got, how it failed
             if line.startswith("rank ") or "terminate" in line or "Error" in line]
    assert done.returncode == 0, "\n".join(where) + "\n" + done.stderr[-1500:]
    ddp = json.loads(out.read_text())

    c = LMTrainConfig(steps=steps, batch_size=2 * per_rank, crop_seconds=crop_s, warmup_steps=2,
                      learning_rate=3e-3, device="cpu")
    single = LMTrainer(CoarseToyStage(), cache, tmp_path / "single", c, False, SINGLE)
    losses = [single.train_step()["loss"] for _ in range(steps)]
    assert losses[-1] < losses[0]  # it did learn: the trajectories are not flat
    windows = single.sampler.batch(0, 2 * per_rank)
    assert len({len(w.semantic) for w in windows}) > 1  # padded rows, unequal token counts
    assert ddp == pytest.approx(losses, rel=1e-5), (ddp, losses)
