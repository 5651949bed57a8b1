"""Offline continuation through a tiny model folder (tiny random codec, tiny fitted semantic
tokenizer, stages trained for a few steps on rendered piano): lengths, seeds, the seam, the CLI's
files, presets and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import (  # noqa: F401 (fixtures)
    data_root,
    model_dir_fixture,
    write_preset,
)

from continuo.server.cli import main
from continuo.server.continuation import Continuation, drop_edge
from continuo.server.errors import AudioError, CheckpointError, ConfigError
from continuo.server.model.stage_config import CoarseStageConfig
from continuo.server.model.stages import CoarseStage
from continuo.server.presets import Preset, load_preset
from continuo.server.tokenizers.codec import EncodedAudio

SR = 24000


@pytest.fixture(scope="module")
def pipeline(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Continuation:
    return Continuation(write_preset(tmp_path_factory.mktemp("preset"), model_dir))


@pytest.fixture(scope="module")
def piano() -> np.ndarray:
    """~2 s of rendered piano at 44.1 kHz (the pipeline resamples it)."""
    return render_piano(progression_notes(), 44100)[:88200]


def test_continuation_has_exact_length_and_keeps_the_prompt_tail(
    pipeline: Continuation, piano: np.ndarray
) -> None:
    steps: list[str] = []
    result = pipeline.generate(piano, 44100, seconds=0.6, seed=1, progress=steps.append)
    assert steps == ["encode", "semantic", "coarse", "fine", "decode"]
    assert set(result.timings_s) == set(steps)
    # 0.6 s = 15 semantic tokens = 45 frames of 320 samples; prompt 0.5 s → 12 tokens (11520),
    # the last of which (3 frames) is remade
    assert result.audio.shape == (15 * 3 * 320,) and result.audio.dtype == np.float32
    assert len(result.prompt) == 12 * 960 and result.sample_rate == SR
    assert result.tokens == {"prompt_semantic": 11, "new_semantic": 16, "prompt_frames": 33,
                             "new_frames": 48, "remade_semantic": 1, "seam_frame": 36}
    assert result.codes.shape == (4, 81) and result.semantic.shape == (27,)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0
    whole = pipeline.generate(piano, 44100, seconds=1.0, seed=1)
    assert whole.audio.shape == (25 * 960,)
    odd = pipeline.generate(piano, 44100, seconds=0.61, seed=1)  # not whole semantic frames
    assert odd.audio.shape == (14640,) and odd.tokens["new_semantic"] == 1 + 16  # cut from 16


def test_acoustic_only_ablation_skips_the_semantic_stage(pipeline: Continuation,
                                                         piano: np.ndarray) -> None:
    full = pipeline.generate(piano, 44100, seconds=0.6, seed=1)
    ablation = pipeline.generate(piano, 44100, seconds=0.6, seed=1, acoustic_only=True)
    assert ablation.audio.shape == full.audio.shape
    assert ablation.tokens["new_semantic"] == 0 and ablation.semantic.shape == (11,)
    assert ablation.codes.shape == full.codes.shape
    assert torch.equal(ablation.codes[:, :33], full.codes[:, :33])  # the prompt's own codes
    assert not torch.equal(ablation.codes[:, 33:], full.codes[:, 33:])


def test_same_seed_same_audio_other_seed_other_audio(pipeline: Continuation,
                                                     piano: np.ndarray) -> None:
    a = pipeline.generate(piano, 44100, seconds=0.4, seed=7)
    b = pipeline.generate(piano, 44100, seconds=0.4, seed=7)
    c = pipeline.generate(piano, 44100, seconds=0.4, seed=8)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert torch.equal(a.codes, b.codes)
    assert not torch.equal(a.codes, c.codes)


class RecordingCoarse(CoarseStage):
    """The real coarse stage, also noting each window's known codes [Q', n] and new frames."""

    def __init__(self, config: CoarseStageConfig) -> None:
        super().__init__(config)
        self.calls: list[tuple[torch.Tensor, int]] = []

    def generate_rows(self, model, semantic, prompts, n_new, params=None,
                      generator=None) -> list[torch.Tensor]:
        new = super().generate_rows(model, semantic, prompts, n_new, params, generator)
        self.calls.append((prompts[0].clone(), new[0].shape[1]))
        return new


def test_continuation_starts_at_the_frame_after_the_prompt(
    model_dir: Path, tmp_path: Path, piano: np.ndarray
) -> None:
    greedy = Continuation(write_preset(tmp_path, model_dir, temperature=0.0))
    stage, model = greedy.stages["coarse"]
    greedy.stages["coarse"] = (RecordingCoarse(stage.config), model)
    result = greedy.generate(piano, 44100, seconds=0.6, watermark=False)  # the codec's own samples
    codec, tok = greedy.tokenizers.codec, greedy.tokenizers
    encoded = codec.encode(torch.from_numpy(result.prompt)[None, None])
    n_prompt, seam = result.tokens["prompt_frames"], result.tokens["seam_frame"]
    assert seam == n_prompt + 3 == encoded.codes.shape[2]  # one semantic frame remade
    # the prompt's tokens open both streams unchanged but for the remade edge, the new ones
    # follow with none missing
    assert torch.equal(result.codes[:, :n_prompt], encoded.codes[0, :, :n_prompt])
    assert torch.equal(result.semantic[:11],
                       torch.from_numpy(tok.semantic.tokenize(result.prompt, SR)[:11]).long())
    # every coarse window was fed the codes right up to the frame it continues from: the
    # prompt's own codes first (its last frame P - 1 included), then the frames made before
    calls = greedy.stages["coarse"][0].calls
    # windows of 12 tokens, 9 known and 3 new; the remade one (3 frames) in a last window
    assert [n for _, n in calls] == [9] * 5 + [3]
    done = n_prompt
    assert torch.equal(calls[0][0], encoded.codes[0, :3, n_prompt - calls[0][0].shape[1]:
                                                  n_prompt])
    for known, n_new in calls:
        assert known.shape[1] > 0
        assert torch.equal(known, result.codes[:3, done - known.shape[1]: done])
        done += n_new
    assert done == result.codes.shape[1]
    # audio = the decoded frames P.. of prompt + continuation codes, nothing repeated, its first
    # 2 ms (48 samples) shifted to start from the prompt's last sample: the step across the seam
    # is the codec's own step there, not the gap between the original and the codec
    full = codec.decode(EncodedAudio(result.codes[None], encoded.scale))[0, 0].numpy()
    seam *= 320
    np.testing.assert_allclose(result.audio[48:], full[seam + 48:], atol=1e-5)
    assert result.audio[0] - result.prompt[-1] == pytest.approx(full[seam] - full[seam - 1],
                                                                abs=1e-5)
    gap = abs(result.prompt[-1] - full[seam - 1])
    assert gap > 1e-5  # the random tiny codec is off the prompt: the splice had work to do
    # the lead-in is the codec's rendering of the prompt's last 50 ms (1,200 samples), meeting
    # the continuation as the codec's own output does; joined() crossfades the prompt into it
    lead = result.lead_in
    assert len(lead) == 1200 and lead[0] == pytest.approx(full[seam - 1200], abs=1e-5)
    assert lead[-1] == pytest.approx(result.prompt[-1], abs=1e-6)
    joined = result.joined()
    assert len(joined) == len(result.prompt) + len(result.audio)
    np.testing.assert_array_equal(joined[:-len(result.audio) - 1200], result.prompt[:-1200])
    np.testing.assert_array_equal(joined[-len(result.audio):], result.audio)


def test_cli_writes_wav_json_png(model_dir: Path, tmp_path: Path, piano: np.ndarray,
                                 capsys: pytest.CaptureFixture) -> None:
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, piano, 44100)
    preset = write_preset(tmp_path, model_dir)
    out = tmp_path / "out" / "cont.wav"
    assert main(["continue", str(prompt), "--seconds", "0.4", "--preset", str(preset),
                 "--seed", "3", "-o", str(out)]) == 0
    assert "continued" in capsys.readouterr().out
    audio, rate = sf.read(out)
    assert rate == SR and audio.shape == (10 * 960,)
    full, _ = sf.read(tmp_path / "out" / "cont.full.wav")
    assert full.shape == (22 * 960,)
    meta = json.loads((tmp_path / "out" / "cont.json").read_text())
    assert meta["seed"] == 3 and meta["seconds"] == 0.4 and meta["prompt"]["path"] == str(prompt)
    assert set(meta["model_sha256"]) == {"codec", "semantic", "semantic_lm", "coarse_lm",
                                         "fine_lm"}
    assert meta["preset"]["name"] == "tiny" and set(meta["timings_s"]) >= {"semantic", "fine"}
    assert (tmp_path / "out" / "cont.png").stat().st_size > 10_000


def test_cli_names_missing_prompt_and_missing_stage(model_dir: Path, tmp_path: Path,
                                                    piano: np.ndarray,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "o.wav")
    preset = write_preset(tmp_path, model_dir)
    assert main(["continue", str(tmp_path / "none.wav"), "--preset", str(preset), "-o", out]) == 2
    assert "none.wav" in capsys.readouterr().err
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "fine_lm")
    with pytest.raises(CheckpointError, match=r"fine_lm: missing fine stage.*train stage fine"):
        Continuation(write_preset(tmp_path, broken))
    with pytest.raises(AudioError, match="shorter than one semantic frame"):
        Continuation(write_preset(tmp_path, model_dir)).generate(piano[:500], 44100, 1.0)


def test_presets_validate_and_name_the_key(tmp_path: Path) -> None:
    piano = load_preset("piano")
    assert piano.name == "piano" and piano.model_path.name == "piano"
    assert load_preset("realtime").coarse.temperature < piano.coarse.temperature
    with pytest.raises(ConfigError, match=r"available presets: .*piano.*realtime"):
        load_preset("nosuch")
    bad = tmp_path / "bad.toml"
    bad.write_text("context_s = -1\n[coarse]\ntop_p = 2.0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*context_s.*coarse\.top_p"):
        load_preset(bad)
    bad.write_text("temprature = 1.0\n")
    with pytest.raises(ConfigError, match="temprature"):
        load_preset(bad)
    assert Preset().semantic.params().temperature == 1.0


def test_drop_edge_leaves_at_least_one_semantic_frame_and_its_codes() -> None:
    semantic, codes = torch.arange(5)[None], torch.arange(2 * 15).reshape(1, 2, 15)
    kept, kept_codes, n = drop_edge(semantic, codes, 3)
    assert n == 1 and torch.equal(kept, semantic[:, :4]) and torch.equal(kept_codes,
                                                                         codes[:, :, :12])
    kept, kept_codes, n = drop_edge(semantic, codes, 3, n=2)
    assert n == 2 and kept.shape == (1, 3) and kept_codes.shape == (1, 2, 9)
    # codes of fewer frames than the semantic tokens cover (the stream encodes only the end)
    assert drop_edge(semantic, codes[:, :, 9:], 3)[1].shape == (1, 2, 3)
    one, one_codes, n = drop_edge(semantic[:, :1], codes[:, :, :3], 3)  # nothing left to drop
    assert n == 0 and one.shape == (1, 1) and one_codes.shape == (1, 2, 3)
