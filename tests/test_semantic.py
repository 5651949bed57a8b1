"""The semantic tokenizer on real rendered piano: tokens follow pitch, not gain; files; CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from audio_fixtures import progression_notes, render_piano, tone

from continuo.server.cli import main
from continuo.server.errors import AudioError, CheckpointError, ConfigError, DataError
from continuo.server.tokenizers.features import build_extractor
from continuo.server.tokenizers.semantic import (
    HubertFeatures,
    MusicFeatures,
    SemanticTokenizer,
    extract_features,
    token_stats,
)

SR = 24000
CLUSTERS = 64


@pytest.fixture(scope="module")
def music() -> MusicFeatures:
    return MusicFeatures()


@pytest.fixture(scope="module")
def progression() -> np.ndarray:
    """C–Am–F–G with a melody, 4 s of music and its release tail (~6.8 s)."""
    return render_piano(progression_notes())


@pytest.fixture(scope="module")
def fitted(music: MusicFeatures) -> SemanticTokenizer:
    """64 clusters fitted on the progression in all 12 keys (one 51 s render)."""
    notes = []
    for key in range(12):
        notes += [(p, start + 8 * key, n) for p, start, n in progression_notes(transpose=key - 5)]
    return SemanticTokenizer.fit(music, [extract_features(music, render_piano(notes), SR)],
                                 CLUSTERS)


def sounding(music: MusicFeatures, audio: np.ndarray) -> np.ndarray:
    """Frames [F] bool less than 30 dB below the clip's loudest (the last feature)."""
    return music(audio)[:, -1] > -30.0 / music.top_db


# --- music features --------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [1, 959, 960, 961, SR, 3 * SR + 5])
def test_music_features_have_one_frame_per_960_samples(music: MusicFeatures,
                                                      n_samples: int) -> None:
    audio = np.random.default_rng(0).normal(0, 0.1, n_samples).astype(np.float32)
    features = music(audio)
    assert music.frame_rate == 25 and music.hop_samples == 960
    assert features.shape == (math.ceil(n_samples / 960), music.dim)
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_frame_i_covers_samples_i_hop_to_next(music: MusicFeatures) -> None:
    """A tone starting at 1.0 s (= frame 25's first sample) is silent in frame 24, full in 25."""
    audio = np.concatenate([np.zeros(SR, np.float32), tone(1760, 1.0)])
    features = music(audio)
    loudness, onset = features[:, -1], features[:, -2]
    assert loudness[24] < -0.9 and loudness[25] > -0.05
    assert int(onset.argmax()) == 25


def test_music_features_ignore_gain_exactly(music: MusicFeatures, progression: np.ndarray) -> None:
    np.testing.assert_allclose(music(0.25 * progression), music(progression), atol=1e-5)
    silence = music(np.zeros(SR, np.float32))
    assert np.isfinite(silence).all() and (silence[:, -1] == -1).all()


def test_music_config_round_trip_and_checks(music: MusicFeatures) -> None:
    assert build_extractor(json.loads(json.dumps(music.config()))) == music
    with pytest.raises(ConfigError, match="whole number"):
        MusicFeatures(frame_rate=23.0)
    with pytest.raises(ConfigError, match="Nyquist"):
        MusicFeatures(sample_rate=8000, fmin_midi=60, n_octaves=6)
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        build_extractor({"name": "w2v-bert"})


# --- tokens follow musical content -------------------------------------------------------------


@pytest.mark.parametrize("gain", [0.25, 0.6])
def test_same_audio_at_another_gain_gives_same_tokens(
    fitted: SemanticTokenizer, progression: np.ndarray, gain: float
) -> None:
    tokens = fitted.tokenize(progression, SR)
    quieter = fitted.tokenize(gain * progression, SR)
    assert np.mean(tokens == quieter) >= 0.95, np.mean(tokens == quieter)


@pytest.mark.parametrize("semitones", [2, 5])
def test_transposed_progression_gives_different_tokens(
    music: MusicFeatures, fitted: SemanticTokenizer, progression: np.ndarray, semitones: int
) -> None:
    transposed = render_piano(progression_notes(transpose=semitones))
    a, b = fitted.tokenize(progression, SR), fitted.tokenize(transposed, SR)
    assert len(a) == len(b)
    both = sounding(music, progression) & sounding(music, transposed)
    assert both.sum() > 50
    assert np.mean(a == b) < 0.5  # all frames, the silent release tail included
    assert np.mean(a[both] == b[both]) < 0.25, np.mean(a[both] == b[both])
    # not a degenerate tokenizer: the progression itself uses many tokens
    assert len(np.unique(a[both])) >= 6


def test_tokens_are_deterministic(music: MusicFeatures, fitted: SemanticTokenizer,
                                  progression: np.ndarray) -> None:
    first = fitted.tokenize(progression, SR)
    np.testing.assert_array_equal(first, fitted.tokenize(progression.copy(), SR))
    assert first.dtype == np.int64 and first.min() >= 0 and first.max() < CLUSTERS
    features = [extract_features(music, progression, SR)]
    one = SemanticTokenizer.fit(music, features, 16, seed=3)
    two = SemanticTokenizer.fit(music, features, 16, seed=3)
    np.testing.assert_array_equal(one.centroids, two.centroids)


def test_token_rate_is_25_hz_at_any_input_rate(fitted: SemanticTokenizer,
                                               progression: np.ndarray) -> None:
    assert fitted.frame_rate == 25.0 and fitted.vocab_size == CLUSTERS
    tokens = fitted.tokenize(progression, SR)
    assert len(tokens) == math.ceil(len(progression) / SR * 25)
    clip = progression[: 6 * SR]  # exactly 6 s: 150 frames at any rate
    at_48k = soxr.resample(clip, SR, 48000)
    tokens_48k = fitted.tokenize(at_48k, 48000)
    assert len(tokens_48k) == 150
    assert np.mean(tokens_48k == fitted.tokenize(clip, SR)) >= 0.9


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.full(100, np.nan, np.float32), SR, "NaN"),
        (np.zeros((2, 100), np.float32), SR, "mono"),
        (np.zeros(0, np.float32), SR, "no samples"),
        (np.zeros(100, np.int16), SR, "dtype"),
        (np.zeros(100, np.float32), 0, "sample rate"),
    ],
)
def test_bad_audio_raises_audio_error(fitted: SemanticTokenizer, audio: np.ndarray, rate: int,
                                      message: str) -> None:
    with pytest.raises(AudioError, match=message):
        fitted.tokenize(audio, rate)


def test_fit_needs_more_frames_than_clusters(music: MusicFeatures) -> None:
    with pytest.raises(DataError, match="fewer than the 64 clusters"):
        SemanticTokenizer.fit(music, [music(tone(440, 1.0))], 64)


def test_token_stats() -> None:
    stats = token_stats(np.array([0, 0, 1, 1, 2, 2, 3, 3]), vocab_size=8)
    assert stats.used_fraction == 0.5 and stats.entropy_bits == pytest.approx(2.0)
    assert stats.perplexity == pytest.approx(4.0)
    assert stats.normalised_entropy == pytest.approx(2.0 / 3.0)


# --- files ---------------------------------------------------------------------------------------


def test_save_load_gives_identical_tokens(fitted: SemanticTokenizer, progression: np.ndarray,
                                          tmp_path: Path) -> None:
    fitted.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["n_clusters"] == CLUSTERS and config["extractor"]["name"] == "music"
    assert len(config["sha256"]) == 64 and len(config["feature_mean"]) == fitted.extractor.dim
    loaded = SemanticTokenizer.load(tmp_path / "tok")
    np.testing.assert_array_equal(loaded.centroids, fitted.centroids)
    np.testing.assert_array_equal(loaded.tokenize(progression, SR),
                                  fitted.tokenize(progression, SR))


def test_load_rejects_missing_and_damaged_folders(fitted: SemanticTokenizer,
                                                  tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        SemanticTokenizer.load(tmp_path / "nowhere")
    fitted.save(tmp_path / "tok")
    weights = tmp_path / "tok" / "centroids.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        SemanticTokenizer.load(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        SemanticTokenizer.load(tmp_path / "tok")


# --- HuBERT-style features from a local folder -------------------------------------------------


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised HuBERT (2 layers, width 16) saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    folder = tmp_path_factory.mktemp("hubert")
    transformers.HubertModel(config).save_pretrained(folder)
    return folder


def test_hubert_features_from_a_local_folder(hubert_dir: Path, progression: np.ndarray) -> None:
    hubert = HubertFeatures(hubert_dir, layer=2)
    assert (hubert.sample_rate, hubert.frame_rate, hubert.dim) == (16000, 50.0, 16)
    clip = progression[: 2 * SR + 100]  # resampled to 16 kHz: 32067 samples → 101 frames
    features = extract_features(hubert, clip, SR)
    assert features.shape == (101, 16) and np.isfinite(features).all()
    np.testing.assert_array_equal(features, extract_features(hubert, clip, SR))
    assert not np.allclose(features, extract_features(HubertFeatures(hubert_dir, 1), clip, SR))
    pooled = HubertFeatures(hubert_dir, layer=2, pool=2)
    assert pooled.frame_rate == 25.0
    assert extract_features(pooled, clip, SR).shape == (51, 16)


def test_hubert_folder_errors(hubert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "missing")):
        HubertFeatures(tmp_path / "missing", layer=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model folder"):
        HubertFeatures(tmp_path / "empty", layer=1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "hubert"}')
    with pytest.raises(CheckpointError, match="broken"):
        HubertFeatures(tmp_path / "broken", layer=1)
    with pytest.raises(ConfigError, match="layer 3"):
        HubertFeatures(hubert_dir, layer=3)


def test_hubert_tokenizer_saves_and_loads(hubert_dir: Path, progression: np.ndarray,
                                          tmp_path: Path) -> None:
    hubert = HubertFeatures(hubert_dir, layer=1, pool=2)
    tokenizer = SemanticTokenizer.fit(hubert, [extract_features(hubert, progression, SR)], 8)
    tokenizer.save(tmp_path / "tok")
    loaded = SemanticTokenizer.load(tmp_path / "tok")
    assert loaded.frame_rate == 25.0 and loaded.sample_rate == 16000
    np.testing.assert_array_equal(loaded.tokenize(progression, SR),
                                  tokenizer.tokenize(progression, SR))


# --- continuo train semantic -------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, progression: np.ndarray) -> Path:
    """A data folder by the manifest contract: 3 train pieces and 1 valid piece of piano."""
    root = tmp_path_factory.mktemp("data")
    items = []
    for i, (split, key) in enumerate([("train", 0), ("train", 3), ("train", -4), ("valid", 2)]):
        audio = progression if key == 0 else render_piano(progression_notes(transpose=key))
        path = Path(split) / f"piece{i}_000.flac"
        (root / split).mkdir(exist_ok=True)
        sf.write(root / path, audio, SR, subtype="PCM_16")
        items.append({"path": path.as_posix(), "piece": f"test/piece{i}", "split": split,
                      "seconds": len(audio) / SR})
    manifest = {"version": 1, "sample_rate": SR, "source": "folder", "items": items,
                "summary": {}, "failures": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_cli_trains_on_a_data_folder(data_dir: Path, progression: np.ndarray, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "semantic"
    assert main(["train", "semantic", str(data_dir), "--out", str(out), "--clusters", "32"]) == 0
    printed = capsys.readouterr().out
    assert "valid: 1 items" in printed and "clusters used" in printed, printed
    tokenizer = SemanticTokenizer.load(out)
    assert tokenizer.vocab_size == 32 and tokenizer.frame_rate == 25.0
    report = json.loads((out / "train_report.json").read_text())
    assert report["train"]["items"] == 3 and report["valid"]["stats"]["n_tokens"] == 171
    assert 0.2 < report["train"]["stats"]["used_fraction"] <= 1.0
    assert len(np.unique(tokenizer.tokenize(progression, SR))) >= 4


def test_cli_hubert_and_errors(data_dir: Path, hubert_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "semantic", str(data_dir), "--out", str(tmp_path / "h"), "--clusters", "8",
            "--extractor", "hubert", "--hubert-dir", str(hubert_dir), "--layer", "1"]
    assert main(args) == 0
    assert SemanticTokenizer.load(tmp_path / "h").extractor.name == "hubert"
    assert main(["train", "semantic", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "manifest" in capsys.readouterr().err
    assert main(["train", "semantic", str(data_dir), "--out", str(tmp_path / "y"),
                 "--extractor", "hubert"]) == 2
    assert "--hubert-dir" in capsys.readouterr().err
