"""The real stages trained on a token cache of rendered piano (tiny random codec, tiny fitted
semantic tokenizer): every stage and layout learns and writes best/, which `load_stage` rebuilds
exactly; `continuo train stage|all` end to end, resumed, and its errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_token_cache import CODEC_75HZ, KBPS, data_root, fit_semantic  # noqa: F401 (fixture)

from continuo.server.cli import main
from continuo.server.errors import CheckpointError, ConfigError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.loading import KIND, load_stage, new_stage, stage_to_dict
from continuo.server.model.stage_api import IGNORE_INDEX, TrainingExample
from continuo.server.model.stages import CoarseStage, FineStage, SemanticStage
from continuo.server.tokenizers.small_codec import SmallCodec
from continuo.server.training.checkpoint import WEIGHTS_NAME, load_model_folder
from continuo.server.training.distributed import Distributed
from continuo.server.training.lm_trainer import LMTrainConfig, LMTrainer, collate
from continuo.server.training.token_cache import TokenCache, ensure_token_cache, model_tokenizers

WINDOW_S = 0.48  # 12 semantic tokens, 36 codec frames: every tiny stage fits 256 positions
SINGLE = Distributed()
STAGES = [("semantic", "flat"), ("coarse", "flat"), ("coarse", "delay"), ("fine", "flat"),
          ("fine", "delay")]


@pytest.fixture(scope="module")
def model_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("model")
    SmallCodec.from_config(CODEC_75HZ).save(root / "codec")
    fit_semantic(data_root, root / "semantic", clusters=8)
    return root


@pytest.fixture(scope="module")
def cache(data_root: Path, model_dir: Path,  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> TokenCache:
    tokenizers = model_tokenizers(model_dir, bandwidth_kbps=KBPS)
    return ensure_token_cache(data_root, tmp_path_factory.mktemp("tokens") / "cache", tokenizers,
                              progress=False)


def test_collate_pads_delay_columns_along_time() -> None:
    a = TrainingExample(torch.ones(3, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    b = TrainingExample(torch.full((3, 2), 5), torch.full((2, 2), 7))
    inputs, targets = collate([a, b])
    assert inputs.shape == (2, 3, 4) and targets.shape == (2, 2, 4)
    assert inputs[1].tolist() == [[5, 5, 0, 0]] * 3
    assert targets[1].tolist() == [[7, 7, IGNORE_INDEX, IGNORE_INDEX]] * 2


def test_new_stages_fit_the_tokenizers(cache: TokenCache) -> None:
    meta = cache.meta["tokenizers"]
    fine = new_stage("fine", meta, "tiny", "delay", window_s=WINDOW_S)
    assert isinstance(fine, FineStage) and fine.config.n_codebooks == 4
    assert (fine.config.n_coarse, fine.config.codebook_size, fine.config.frame_rate_hz) == (3, 32,
                                                                                             75)
    assert fine.config.context_s == pytest.approx(0.16)
    assert new_stage("semantic", meta, "tiny", window_s=WINDOW_S).config.vocab_size == 8
    with pytest.raises(ConfigError, match="max_seq_len"):
        new_stage("coarse", meta, "tiny", "flat")  # 10 s of 3 flat codebooks: 2,501 positions
    with pytest.raises(ConfigError, match="stage must be"):
        new_stage("vocoder", meta)


@pytest.mark.parametrize(("name", "layout"), STAGES, ids=[f"{n}-{la}" for n, la in STAGES])
def test_each_stage_learns_and_its_best_folder_rebuilds_it(
    cache: TokenCache, tmp_path: Path, name: str, layout: str
) -> None:
    stage = new_stage(name, cache.meta["tokenizers"], "tiny", layout, window_s=WINDOW_S)
    config = LMTrainConfig(steps=25, batch_size=4, crop_seconds=WINDOW_S, warmup_steps=2,
                           learning_rate=1e-2, eval_windows=8, eval_every=1000, device="cpu")
    trainer = LMTrainer(stage, cache.folder, tmp_path / "run", config, False, SINGLE)
    assert isinstance(trainer.model, ColumnDecoder) == (layout == "delay")
    first = trainer.evaluate()
    summary = trainer.run()
    assert summary.valid_loss < 0.8 * first, (first, summary.valid_loss)

    loaded_stage, model = load_stage(tmp_path / "run" / "best")
    assert type(loaded_stage) is type(stage) and loaded_stage.config == stage.config
    example = stage.example(trainer.eval_set[0])
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(example.inputs[None]),
                                   trainer.model(example.inputs[None]), rtol=0, atol=0)


def test_load_stage_refuses_damaged_or_foreign_folders(cache: TokenCache, model_dir: Path,
                                                       tmp_path: Path) -> None:
    stage = new_stage("semantic", cache.meta["tokenizers"], "tiny", window_s=WINDOW_S)
    config = LMTrainConfig(steps=1, batch_size=2, crop_seconds=WINDOW_S, eval_windows=2,
                           device="cpu")
    LMTrainer(stage, cache.folder, tmp_path / "run", config, False, SINGLE).run()
    best = tmp_path / "run" / "best"
    assert load_model_folder(best, KIND).config == stage_to_dict(stage)
    with pytest.raises(CheckpointError, match="small_codec"):
        load_stage(model_dir / "codec")
    weights = safetensors.torch.load_file(best / WEIGHTS_NAME)
    weights["tok_emb.weight"] += 1.0
    safetensors.torch.save_file(weights, best / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_stage(best)


def test_a_new_run_starts_from_a_stage_folder(cache: TokenCache, tmp_path: Path) -> None:
    """`init_from`: the start's weights exactly (float16 export cast back), step 0, fresh
    optimiser; a folder of another stage or decoder is refused, naming it."""
    meta = cache.meta["tokenizers"]
    stage = new_stage("fine", meta, "tiny", "delay", window_s=WINDOW_S)
    config = LMTrainConfig(steps=6, batch_size=2, crop_seconds=WINDOW_S, eval_windows=4,
                           learning_rate=1e-2, eval_every=1000, device="cpu")
    first = LMTrainer(stage, cache.folder, tmp_path / "first", config, False, SINGLE).run()
    start = tmp_path / "start"
    assert main(["stage", "export", str(tmp_path / "first" / "best"),
                 str(start / "fine_lm")]) == 0  # float16, as models/piano ships
    _, shipped = load_stage(start / "fine_lm")

    again = LMTrainer(stage, cache.folder, tmp_path / "again",
                      replace(config, init_from=start / "fine_lm", seed=7), False, SINGLE)
    assert again.step == 0 and not again.opt.state
    for name, tensor in shipped.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor.float(), rtol=0,
                                   atol=0, msg=name)
    # it starts where the first run's best ended (same held-out windows; float16 weights)
    assert again.evaluate() == pytest.approx(first.best_valid_loss, abs=0.01)

    flat = new_stage("fine", meta, "tiny", "flat", window_s=WINDOW_S)
    with pytest.raises(CheckpointError, match=r"fine_lm.*same size, layout and window"):
        LMTrainer(flat, cache.folder, tmp_path / "flat",
                  replace(config, init_from=start / "fine_lm"), False, SINGLE)


def cli(data: Path, model: Path, command: str, *options: str) -> list[str]:
    """`continuo train COMMAND DATA OPTIONS` with a tiny, quick stage setup."""
    common = ["--model-dir", str(model), "--size", "tiny", "--window-s", str(WINDOW_S),
              "--bandwidth", str(KBPS), "--batch-size", "2", "--warmup-steps", "1",
              "--device", "cpu"]
    return ["train", *command.split(), str(data), *options, *common]


def test_cli_trains_a_stage_and_resumes_it(data_root: Path, model_dir: Path,  # noqa: F811
                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "runs" / "coarse"
    assert main(cli(data_root, model_dir, "stage coarse", "--out", str(run),
                    "--steps", "3")) == 0
    out = capsys.readouterr().out
    assert "coarse: stopped by steps at step 3" in out and str(run / "best") in out
    assert (tmp_path / "runs" / "token_cache" / "cache.json").is_file()  # RUN/../token_cache
    stage, _ = load_stage(run / "best")
    assert isinstance(stage, CoarseStage) and stage.config.layout == "delay"

    assert main(cli(data_root, model_dir, "stage coarse", "--out", str(run),
                    "--steps", "5")) == 0
    assert "at step 5 (this sitting from 3)" in capsys.readouterr().out
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5

    assert main(cli(data_root, model_dir, "stage coarse", "--out", str(run),
                    "--steps", "6", "--layout", "flat")) == 2  # another stage config
    assert "another config" in capsys.readouterr().err


def test_cli_trains_all_three_stages_on_one_cache(data_root: Path, model_dir: Path,  # noqa: F811
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    assert main(cli(data_root, model_dir, "all", "--out", str(runs), "--steps",
                    "2", "--layout", "flat")) == 0
    out = capsys.readouterr().out
    for name, cls in (("semantic", SemanticStage), ("coarse", CoarseStage), ("fine", FineStage)):
        assert f"{name}: stopped by steps at step 2" in out
        stage, _ = load_stage(runs / name / "best")
        assert type(stage) is cls
    assert sorted(p.name for p in runs.iterdir()) == ["coarse", "fine", "semantic",
                                                      "token_cache"]


def test_cli_names_a_missing_model_or_data_folder(data_root: Path, model_dir: Path,  # noqa: F811
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "run")
    assert main(cli(data_root, tmp_path / "nomodel", "stage fine", "--out", out)) == 2
    assert "nomodel: not a model folder" in capsys.readouterr().err
    assert main(cli(tmp_path / "nodata", tmp_path, "all", "--out", out)) == 2
    assert "nodata: not a data folder" in capsys.readouterr().err
    assert main(cli(data_root, model_dir, "stage fine", "--out", out, "--steps", "1",
                    "--init-from", str(model_dir))) == 2  # it has codec/ and semantic/ only
    assert f"{model_dir / 'fine_lm'}" in capsys.readouterr().err
