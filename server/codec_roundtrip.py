"""A clip through a codec and back, with its metrics, a WAV, a JSON sidecar and a plot of
original | reconstruction (`continuo codec roundtrip`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from continuo.server.audio import Audio, write_audio
from continuo.server.evaluation.codec_metrics import codec_metrics
from continuo.server.plots import plot_continuation
from continuo.server.tokenizers.codec import AcousticCodec, EncodedAudio


@dataclass(frozen=True)
class Roundtrip:
    """A clip and its reconstruction, both mono float32 [T] at `sample_rate`."""

    original: np.ndarray
    decoded: np.ndarray
    sample_rate: int
    n_codebooks: int
    frames: int
    seconds_taken: float

    @property
    def metrics(self) -> dict[str, float]:
        return codec_metrics(self.original, self.decoded, self.sample_rate)


def reconstruct(codec: AcousticCodec, samples: np.ndarray) -> tuple[np.ndarray, EncodedAudio]:
    """Mono samples [T] at the codec's rate → (the codec's reconstruction [T] float32, codes)."""
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
    encoded = codec.encode(x.repeat(1, codec.channels, 1))  # [1, C, T]
    decoded = codec.decode(encoded)[0].mean(dim=0)[: len(samples)].float().cpu().numpy()
    return decoded, encoded


def roundtrip(codec: AcousticCodec, audio: Audio) -> Roundtrip:
    """Encode and decode `audio` (loaded at the codec's rate, mono) with `codec`."""
    start = time.perf_counter()
    decoded, encoded = reconstruct(codec, audio.samples[0])
    return Roundtrip(audio.samples[0], decoded, codec.sample_rate, encoded.codes.shape[1],
                     encoded.codes.shape[2], time.perf_counter() - start)


def write_roundtrip(result: Roundtrip, out: Path, plot: Path | None, info: dict) -> dict:
    """WAV at `out`, JSON sidecar beside it, optional plot; returns the sidecar."""
    write_audio(out, result.decoded[None], result.sample_rate)
    seconds = len(result.original) / result.sample_rate
    sidecar = {
        **info,
        "sample_rate": result.sample_rate,
        "seconds": round(seconds, 3),
        "codebooks": result.n_codebooks,
        "frames": result.frames,
        "speed_x_realtime": round(seconds / result.seconds_taken, 1),
        "metrics": {k: round(v, 4) for k, v in result.metrics.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    if plot is not None:
        plot_continuation(result.original, result.decoded, result.sample_rate, plot,
                          title=f"codec {'/'.join(Path(info.get('codec', '')).parts[-2:])}, "
                                f"{info.get('bandwidth_kbps')} kbps: original | reconstruction",
                          labels=("original", "reconstruction"))
    return sidecar
