"""Benchmark: EnCodec 24 kHz encode + decode speed and streaming-decode seam error (`make bench`).

Uses the pretrained weights when they are in the torch hub cache (measurements that hold for
the shipped model), else random weights with codebooks drawn from the model's latents.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from audio_fixtures import progression_notes, render_piano
from codec_fixtures import seam_error, seeded_encodec_model, stream_decode

from continuo.server.errors import CheckpointError
from continuo.server.tokenizers.codec import EncodecCodec
from continuo.server.tokenizers.streaming import StreamingConfig, StreamingDecoder

SECONDS = 10.0
CHUNK_FRAMES = 37  # ~0.5 s, one beat at 120 BPM


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


def test_encodec_24khz_speed_and_seams() -> None:
    torch.set_num_threads(2)
    codec, weights = _codec()
    audio = _piano(SECONDS)
    encoded = codec.encode(audio)
    whole = codec.decode(encoded)
    encode_s = _best_seconds(lambda: codec.encode(audio))
    decode_s = _best_seconds(lambda: codec.decode(encoded))
    print(f"\nEnCodec 24 kHz, 6 kbps, {weights}, {SECONDS:.0f} s piano, 2 threads:")
    print(f"  encode {SECONDS / encode_s:.1f}x realtime, decode {SECONDS / decode_s:.1f}x, "
          f"encode + decode {SECONDS / (encode_s + decode_s):.1f}x")
    print(f"  streaming decode, {CHUNK_FRAMES}-frame chunks: context, crossfade frames → "
          "max |err| / peak, RMS err / RMS near seams, speed")
    for context, crossfade in [(0, 0), (0, 1), (4, 1), (8, 1), (16, 1), (32, 1), (64, 1)]:
        decoder = StreamingDecoder(codec, StreamingConfig(context, crossfade))
        streamed, seams = stream_decode(decoder, encoded, [CHUNK_FRAMES])
        max_rel, rms_rel = seam_error(streamed, seams, whole, codec.hop_length)
        seconds = _best_seconds(lambda d=decoder: stream_decode(d, encoded, [CHUNK_FRAMES]), 1)
        print(f"  {context:3d}, {crossfade}: {max_rel:.1e}  {rms_rel:.1e}  "
              f"{SECONDS / seconds:.1f}x realtime")
