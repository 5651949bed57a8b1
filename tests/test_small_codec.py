"""The small codec and its quantiser: shapes, normalisation, bandwidth, save/load, k-means init,
dead-code replacement. Tiny configs with random weights."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from audio_fixtures import progression_notes, render_piano

from continuo.server.errors import AudioError, CheckpointError, ConfigError
from continuo.server.tokenizers._encodec import encodec
from continuo.server.tokenizers.codec import AcousticCodec, EncodedAudio
from continuo.server.tokenizers.quantizer import (
    Codebook,
    QuantizerConfig,
    ResidualQuantizer,
)
from continuo.server.tokenizers.small_codec import (
    SmallCodec,
    SmallCodecConfig,
    SmallCodecModel,
)

TINY = {
    "ratios": (4, 4, 2), "n_filters": 4, "dimension": 16, "lstm_layers": 1, "n_codebooks": 4,
    "codebook_size": 32, "codebook_choices": (1, 2, 4), "istft_dim": 32,
    "istft_intermediate_dim": 64, "istft_layers": 2,
}


def tiny_config(decoder: str = "istft") -> SmallCodecConfig:
    return SmallCodecConfig(decoder=decoder, **TINY)


@pytest.mark.parametrize("decoder", ["istft", "seanet"])
def test_forward_backward_shapes(decoder: str) -> None:
    model = SmallCodecModel(tiny_config(decoder)).train()
    audio = torch.randn(2, 1, 1000)
    out = model(audio, n_q=2)
    assert out.audio.shape == (2, 1, 1000)
    assert out.codes.shape == (2, 2, math.ceil(1000 / 32)) and out.codes.dtype == torch.int64
    (out.audio.abs().mean() + out.commit_loss).backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    bypass = model(audio, n_q=0)  # the warm-up: no quantiser
    assert bypass.audio.shape == (2, 1, 1000) and bypass.codes.shape == (2, 0, 32)


@pytest.mark.parametrize("decoder", ["istft", "seanet"])
@pytest.mark.parametrize("n_samples", [32, 1000, 1024, 2401])
def test_encode_decode_shapes(decoder: str, n_samples: int) -> None:
    codec = SmallCodec.from_config(tiny_config(decoder))
    assert isinstance(codec, AcousticCodec)
    audio = 0.1 * torch.randn(3, 1, n_samples)
    enc = codec.encode(audio)
    n_frames = math.ceil(n_samples / codec.hop_length)
    assert enc.codes.shape == (3, 4, n_frames) and enc.codes.dtype == torch.int64
    assert int(enc.codes.max()) < codec.codebook_size
    assert torch.allclose(enc.scale[:, 0], audio.pow(2).mean(dim=(1, 2)).sqrt())
    decoded = codec.decode(enc)
    assert decoded.shape == (3, 1, n_frames * codec.hop_length)
    assert torch.isfinite(decoded).all()


def test_rms_normalisation_makes_codes_level_independent() -> None:
    codec = SmallCodec.from_config(tiny_config())
    audio = 0.3 * torch.randn(2, 1, 4000)
    loud, quiet = codec.encode(audio), codec.encode(0.01 * audio)
    assert torch.equal(loud.codes, quiet.codes)
    assert torch.allclose(quiet.scale, 0.01 * loud.scale)
    assert torch.allclose(codec.decode(quiet), 0.01 * codec.decode(loud), atol=1e-6)
    unscaled = codec.decode(EncodedAudio(loud.codes))  # no scale: the normalised level
    assert torch.allclose(codec.decode(loud), unscaled * loud.scale[:, :, None], atol=1e-5)


def test_bandwidth_sets_the_number_of_codebooks() -> None:
    codec = SmallCodec.from_config(SmallCodecConfig())  # 75 Hz, 8 × 1024: 0.75 kbps each
    assert codec.frame_rate == 75.0 and codec.hop_length == 320
    for kbps, n in [(1.5, 2), (3.0, 4), (6.0, 8), (0.1, 1)]:
        codec.bandwidth_kbps = kbps
        assert codec.n_codebooks == n
        assert codec.encode(torch.randn(1, 1, 3200)).codes.shape == (1, n, 10)
    with pytest.raises(ConfigError, match="12 kbps"):
        codec.bandwidth_kbps = 12.0
    config50 = SmallCodecConfig.for_frame_rate(50)
    assert config50.frame_rate == 50.0 and config50.kbps_per_codebook == 0.5
    codec50 = SmallCodec.from_config(config50)
    assert [codec50.n_codebooks_for_bandwidth(k) for k in (1.5, 3.0, 6.0)] == [3, 6, 12]


def test_save_load_round_trip_gives_identical_codes_and_audio(tmp_path) -> None:
    codec = SmallCodec.from_config(tiny_config())
    latents = torch.randn(2000, 16)
    codec.model.init_quantizer(latents)
    audio = torch.from_numpy(render_piano(progression_notes())[:12000])[None, None]
    before = codec.encode(audio)
    folder = codec.save(tmp_path / "codec")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["kind"] == "small_codec" and len(meta["weights_sha256"]) == 64
    loaded = SmallCodec.load(folder)
    after = loaded.encode(audio)
    assert loaded.config == codec.config and loaded.model.quantizer_initialized
    assert torch.equal(before.codes, after.codes)
    assert torch.equal(codec.decode(before), loaded.decode(after))


def test_load_rejects_tampered_or_foreign_folders(tmp_path) -> None:
    folder = SmallCodec.from_config(tiny_config()).save(tmp_path / "codec")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights_sha256"):
        SmallCodec.load(folder)
    with pytest.raises(CheckpointError, match="not a model folder"):
        SmallCodec.load(tmp_path / "missing")


def test_bad_input_raises_audio_error() -> None:
    codec = SmallCodec.from_config(tiny_config())
    with pytest.raises(AudioError, match=r"\[B, 1, T>0\]"):
        codec.encode(torch.zeros(1, 2, 100))
    with pytest.raises(AudioError, match="NaN"):
        codec.encode(torch.full((1, 1, 100), float("nan")))


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="decoder"):
        SmallCodecConfig(decoder="wavenet")
    with pytest.raises(ConfigError, match="codebook_choices"):
        SmallCodecConfig(codebook_choices=(2, 16))
    with pytest.raises(ConfigError, match="unknown"):
        SmallCodecConfig.from_dict({"n_filter": 3})


def test_rvq_codes_nest_across_bandwidths() -> None:
    rvq = ResidualQuantizer(QuantizerConfig(dimension=16, n_codebooks=4, codebook_size=32)).eval()
    rvq.initialize(torch.randn(3000, 16))
    x = torch.randn(2, 16, 50)
    full = rvq.encode(x, 4)
    assert torch.equal(rvq.encode(x, 2), full[:, :2])
    errors = [(rvq.decode(full[:, :k]) - x).pow(2).mean() for k in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]


def test_kmeans_init_is_fast_and_uses_the_codebooks() -> None:
    """The notes' case: 8 codebooks of 1024 on 2,400 vectors of 128 (encodec's took > 5 min)."""
    rvq = ResidualQuantizer(QuantizerConfig(dimension=128, n_codebooks=8, codebook_size=1024))
    latents = torch.randn(2400, 128)
    before = (rvq.decode(rvq.encode(latents.t()[None], 8)) - latents.t()[None]).pow(2).mean()
    t0 = time.perf_counter()
    rvq.initialize(latents)
    seconds = time.perf_counter() - t0
    assert seconds < 30, f"k-means init took {seconds:.1f} s"
    assert rvq.initialized
    codes = rvq.encode(latents.t()[None], 8)
    after = (rvq.decode(codes) - latents.t()[None]).pow(2).mean()
    assert after < 0.5 * before
    assert codes[0, 0].unique().numel() > 900  # k-means leaves few of 1024 codes unused


def _usage_after_shift(codebook: torch.nn.Module, steps: int = 60) -> int:
    """Train on data far from where the codebook was initialised; count codes then in use."""
    generator = torch.Generator().manual_seed(0)
    shifted = lambda n: torch.randn(n, 8, generator=generator) + 6.0  # noqa: E731
    codebook.train()
    for _ in range(steps):
        codebook(shifted(256))
    codebook.eval()
    return codebook(shifted(4096))[1].unique().numel()


def test_dead_codes_are_replaced_after_the_ema_update() -> None:
    ours = Codebook(dim=8, codebook_size=64, decay=0.9, dead_code_fraction=0.05)
    ours.initialize(torch.randn(2000, 8), n_iters=10)
    theirs = encodec.quantization.core_vq.EuclideanCodebook(
        dim=8, codebook_size=64, decay=0.9, threshold_ema_dead_code=2
    )
    theirs.embed.copy_(ours.embed)
    theirs.embed_avg.copy_(ours.embed_avg)
    theirs.cluster_size.copy_(ours.cluster_size)
    # At first the shifted data all falls on a few codes at the edge of the old cloud.
    assert ours.eval()(torch.randn(4096, 8) + 6.0)[1].unique().numel() < 24
    assert _usage_after_shift(ours) >= 56
    # encodec 0.1.1 writes replacements to `embed` only, and its EMA step overwrites them.
    assert _usage_after_shift(theirs) < 32


def test_streaming_decode_with_lookahead_matches_whole_decode() -> None:
    """The inverse-STFT head's convolutions look ahead: streaming needs `lookahead_frames`.

    Without lookahead the seams are wrong (this is what makes the test able to fail); with 8
    frames of lookahead (107 ms at 75 Hz) chunked decoding matches decoding the whole stream.
    """
    from codec_fixtures import seam_error, stream_decode

    from continuo.server.tokenizers.streaming import StreamingConfig, StreamingDecoder

    codec = SmallCodec.from_config(SmallCodecConfig())
    audio = torch.from_numpy(render_piano(progression_notes()))[None, None]
    with torch.no_grad():  # codebooks from this clip's latents, so codes follow the audio
        latents = codec.model.encode_latents(audio / audio.pow(2).mean().sqrt())[0].T
        codec.model.init_quantizer(latents.repeat(4, 1) + 0.01 * torch.randn(4 * len(latents), 128))
    encoded = codec.encode(audio)
    whole = codec.decode(encoded)
    errors = {}
    for lookahead in (0, 8):
        decoder = StreamingDecoder(codec, StreamingConfig(32, 1, lookahead))
        streamed, seams = stream_decode(decoder, encoded, [37])
        errors[lookahead] = seam_error(streamed, seams, whole, codec.hop_length)
    assert errors[0][0] > 0.05  # max |err| / peak near seams without lookahead
    assert errors[8][0] < 1e-3 and errors[8][1] < 1e-4
