"""`continuo codec roundtrip|eval|export` and codec loading, on tiny real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import progression_notes, render_piano
from safetensors import safe_open
from test_small_codec import tiny_config

from continuo.server.cli import main
from continuo.server.errors import CheckpointError
from continuo.server.paths import DEFAULT_MODEL_DIR
from continuo.server.tokenizers.features import MusicFeatures
from continuo.server.tokenizers.loading import load_codec
from continuo.server.tokenizers.semantic import SemanticTokenizer, extract_features
from continuo.server.tokenizers.small_codec import SmallCodec

SR = 24000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder laid out like models/piano: tiny codec, semantic tokenizer, clip."""
    root = tmp_path_factory.mktemp("model")
    SmallCodec.from_config(tiny_config()).save(root / "codec")
    clip = render_piano(progression_notes())
    music = MusicFeatures()
    SemanticTokenizer.fit(music, [extract_features(music, clip, SR)], 8).save(root / "semantic")
    sf.write(root / "clip.flac", clip, SR, subtype="PCM_16")
    return root


def test_codec_roundtrip_and_eval_commands(model_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rt.wav"
    argv = ["codec", "roundtrip", str(model_dir / "clip.flac"), "-o", str(out),
            "--codec", str(model_dir / "codec"), "--bandwidth", "15"]  # 4 × 3.75 kbps
    assert main(argv) == 0
    assert out.exists() and out.with_suffix(".png").exists()
    assert json.loads(out.with_suffix(".json").read_text())["codebooks"] == 4
    (tmp_path / "data" / "valid").mkdir(parents=True)
    sf.write(tmp_path / "data/valid/a.flac", render_piano(progression_notes(transpose=3)), SR)
    (tmp_path / "data/manifest.json").write_text(json.dumps({
        "version": 1, "sample_rate": SR, "source": "folder", "failures": [],
        "items": [{"path": "valid/a.flac", "piece": "a", "split": "valid", "seconds": 4.0}]}))
    table = tmp_path / "codec.md"
    argv = ["codec", "eval", str(model_dir / "codec"), str(tmp_path / "data"), "--seconds", "2",
            "--out", str(table)]
    assert main(argv) == 0
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3 and "kbps" in rows[1]  # header + 1.5/3/6 kbps
    assert main(["codec", "eval", str(model_dir / "codec"), str(tmp_path / "data"),
                 "--split", "test"]) == 2  # no items: an error, not a crash
    assert "no items in split 'test'" in capsys.readouterr().err


def test_load_codec_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError, match=r"encodec_24khz-d7cc33bc\.th"):
        load_codec("encodec_24khz")
    with pytest.raises(CheckpointError, match="nor a small-codec folder"):
        load_codec(tmp_path / "nowhere")


def test_embedded_semantic_tokenizer_loads_and_tokenizes_the_bundled_clip() -> None:
    tokenizer = SemanticTokenizer.load(DEFAULT_MODEL_DIR / "semantic")  # checks the weights' sha256
    audio, sr = sf.read(DEFAULT_MODEL_DIR / "clip.flac", dtype="float32")
    tokens = tokenizer.tokenize(audio, sr)
    assert len(tokens) == pytest.approx(len(audio) / sr * tokenizer.frame_rate, abs=1)
    assert np.unique(tokens).size > 20  # a real piece uses many clusters


def test_export_float16_loads_back_with_nearly_the_same_output(model_dir: Path,
                                                               tmp_path: Path) -> None:
    src, dst = model_dir / "codec", tmp_path / "shipped"
    assert main(["codec", "export", str(src), str(dst)]) == 0
    assert (dst / "model.safetensors").stat().st_size < 0.6 * (src / "model.safetensors").stat(
    ).st_size
    one, two = SmallCodec.load(src), SmallCodec.load(dst)
    assert next(two.model.parameters()).dtype == torch.float32
    audio = torch.from_numpy(sf.read(model_dir / "clip.flac", dtype="float32")[0])[None, None]
    encoded = one.encode(audio)
    a, b = one.decode(encoded), two.decode(encoded)
    assert 0 < (a - b).abs().max() < 0.01 * a.abs().max()  # rounded, but barely
    # The codebooks' EMA sums (training-only) are left out and rebuilt at load.
    with safe_open(dst / "model.safetensors", framework="pt") as f:
        assert not [k for k in f.keys() if k.endswith("embed_avg")]  # noqa: SIM118
    rebuilt = dict(two.model.state_dict())
    key = next(k for k in rebuilt if k.endswith("_codebook.embed_avg"))
    torch.testing.assert_close(rebuilt[key], rebuilt[key.replace("embed_avg", "embed")]
                               * rebuilt[key.replace("embed_avg", "cluster_size")][:, None])


def test_embedded_codec_loads_with_its_hash_and_codes_the_bundled_clip() -> None:
    codec = SmallCodec.load(DEFAULT_MODEL_DIR / "codec")  # safetensors + sha256 check
    codec.bandwidth_kbps = 6.0
    audio = torch.from_numpy(sf.read(DEFAULT_MODEL_DIR / "clip.flac", dtype="float32")[0])
    encoded = codec.encode(audio[None, None, : 2 * codec.sample_rate])
    assert encoded.codes.shape == (1, 8, 150)
    assert encoded.codes.unique().numel() > 100  # a trained quantiser uses many codes
