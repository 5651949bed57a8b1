"""Benchmark: codec encode + decode speed and streaming-decode seam error (`make bench`).

EnCodec 24 kHz is the baseline measured in the same run; the small codec's speed is printed as a
multiple of realtime and as a ratio to EnCodec's (target: ≥ 20x realtime on 2 cores). EnCodec
uses the pretrained weights when they are in the torch hub cache, else random weights with
codebooks drawn from the model's latents; the small codec uses the trained one at
$CONTINUO_CODEC (default runs/codec/best) when present, else the default config's random
weights (speed does not depend on the weights' values).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_fixtures import progression_notes, render_piano
from codec_fixtures import seam_error, seeded_encodec_model, stream_decode

from continuo.server.errors import CheckpointError
from continuo.server.tokenizers.codec import AcousticCodec, EncodecCodec
from continuo.server.tokenizers.small_codec import SmallCodec, SmallCodecConfig
from continuo.server.tokenizers.streaming import StreamingConfig, StreamingDecoder

SECONDS = 10.0
CHUNK_FRAMES = 37  # ~0.5 s, one beat at 120 BPM
SMALL_TARGET_X = 20.0


def _codec() -> tuple[EncodecCodec, str]:
    try:
        return EncodecCodec.load("encodec_24khz", bandwidth_kbps=6.0), "pretrained"
    except CheckpointError:
        return EncodecCodec(seeded_encodec_model("encodec_24khz"), 6.0), "random weights"


def _piano(seconds: float) -> torch.Tensor:
    notes = progression_notes() + progression_notes(transpose=5)
    one = render_piano(notes, sample_rate=24000)
    n = int(seconds * 24000)
    return torch.from_numpy(np.resize(one, n))[None, None]  # [1, 1, T], repeated to length


def _best_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _small_codec() -> tuple[SmallCodec, str]:
    folder = Path(os.environ.get("CONTINUO_CODEC", "runs/codec/best"))
    if (folder / "config.json").exists():
        codec, weights = SmallCodec.load(folder), f"trained ({folder})"
    else:
        codec, weights = SmallCodec.from_config(SmallCodecConfig()), "random weights"
    codec.bandwidth_kbps = 6.0
    return codec, weights


def _speed(codec: AcousticCodec, audio: torch.Tensor) -> tuple[float, float]:
    """(encode, decode) speed in multiples of realtime, best of 3."""
    encoded = codec.encode(audio)
    encode_s = _best_seconds(lambda: codec.encode(audio))
    decode_s = _best_seconds(lambda: codec.decode(encoded))
    return SECONDS / encode_s, SECONDS / decode_s


def _both(encode_x: float, decode_x: float) -> float:
    return 1.0 / (1.0 / encode_x + 1.0 / decode_x)


@pytest.fixture(scope="module")
def encodec_speed() -> tuple[float, float]:
    torch.set_num_threads(2)
    codec, weights = _codec()
    encode_x, decode_x = _speed(codec, _piano(SECONDS))
    print(f"\nEnCodec 24 kHz, 6 kbps, {weights}, {SECONDS:.0f} s piano, 2 threads:")
    print(f"  encode {encode_x:.1f}x realtime, decode {decode_x:.1f}x, "
          f"encode + decode {_both(encode_x, decode_x):.1f}x")
    return encode_x, decode_x


def test_small_codec_speed(encodec_speed: tuple[float, float]) -> None:
    torch.set_num_threads(2)
    codec, weights = _small_codec()
    encode_x, decode_x = _speed(codec, _piano(SECONDS))
    both_x, base_x = _both(encode_x, decode_x), _both(*encodec_speed)
    print(f"\nsmall codec, 6 kbps, {weights}, {SECONDS:.0f} s piano, 2 threads:")
    print(f"  encode {encode_x:.1f}x realtime, decode {decode_x:.1f}x, encode + decode "
          f"{both_x:.1f}x = {both_x / base_x:.1f}x EnCodec 24 kHz's speed in this run")
    assert both_x >= SMALL_TARGET_X


def test_encodec_24khz_seams() -> None:
    torch.set_num_threads(2)
    codec, _ = _codec()
    audio = _piano(SECONDS)
    encoded = codec.encode(audio)
    whole = codec.decode(encoded)
    print(f"  streaming decode, {CHUNK_FRAMES}-frame chunks: context, crossfade frames → "
          "max |err| / peak, RMS err / RMS near seams, speed")
    for context, crossfade in [(0, 0), (0, 1), (4, 1), (8, 1), (16, 1), (32, 1), (64, 1)]:
        decoder = StreamingDecoder(codec, StreamingConfig(context, crossfade))
        streamed, seams = stream_decode(decoder, encoded, [CHUNK_FRAMES])
        max_rel, rms_rel = seam_error(streamed, seams, whole, codec.hop_length)
        seconds = _best_seconds(lambda d=decoder: stream_decode(d, encoded, [CHUNK_FRAMES]), 1)
        print(f"  {context:3d}, {crossfade}: {max_rel:.1e}  {rms_rel:.1e}  "
              f"{SECONDS / seconds:.1f}x realtime")
