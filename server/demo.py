"""`continuo demo` and `continuo codec roundtrip`: a clip through the codec, with a plot.

Until the AudioLM stages ship (the stages and default-model issues), the demo shows the
foundation they stand on: the bundled held-out piano clip coded by the embedded codec at 6 kbps
and tokenized by the embedded semantic tokenizer, with the metrics, a WAV, a JSON sidecar and a
plot of original | reconstruction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from continuo.server.audio import Audio, load_audio, write_audio
from continuo.server.evaluation.codec_metrics import codec_metrics
from continuo.server.paths import DEFAULT_MODEL_DIR
from continuo.server.plots import plot_continuation
from continuo.server.tokenizers.codec import AcousticCodec


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


def roundtrip(codec: AcousticCodec, audio: Audio) -> Roundtrip:
    """Encode and decode `audio` (loaded at the codec's rate, mono) with `codec`."""
    samples = torch.from_numpy(audio.samples[:1])[None].repeat(1, codec.channels, 1)  # [1, C, T]
    start = time.perf_counter()
    encoded = codec.encode(samples)
    decoded = codec.decode(encoded)[0].mean(dim=0)[: samples.shape[-1]].cpu().numpy()
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


def run_demo(out_dir: Path, model_dir: Path = DEFAULT_MODEL_DIR) -> dict[str, Path]:
    """The bundled clip through the embedded codec and semantic tokenizer; returns the paths."""
    from continuo.server.tokenizers.loading import load_codec
    from continuo.server.tokenizers.semantic import SemanticTokenizer

    codec = load_codec(model_dir / "codec", bandwidth_kbps=6.0)
    tokenizer = SemanticTokenizer.load(model_dir / "semantic")
    clip = load_audio(model_dir / "clip.flac", sample_rate=codec.sample_rate)
    tokens = tokenizer.tokenize(clip.samples[0], clip.sample_rate)
    paths = {"wav": out_dir / "demo.wav", "plot": out_dir / "demo.png"}
    paths["sidecar"] = paths["wav"].with_suffix(".json")
    info = {"clip": str(model_dir / "clip.flac"), "codec": str(model_dir / "codec"),
            "bandwidth_kbps": 6.0, "semantic_tokens": len(tokens),
            "semantic_vocab_used": int(np.unique(tokens).size),
            "semantic_token_rate_hz": tokenizer.frame_rate}
    write_roundtrip(roundtrip(codec, clip), paths["wav"], paths["plot"], info)
    return paths
