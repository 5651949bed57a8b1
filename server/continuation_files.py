"""What `continuo continue` writes next to OUT.wav: the files of one offline continuation.

    OUT.wav       the continuation only (codec rate, mono)
    OUT.full.wav  prompt (as used: resampled, trimmed) crossfaded into the continuation over
                  its last `seam.CROSSFADE_S` (`ContinuationResult.joined`)
    OUT.json      sidecar: model folder and the sha256 of each part's config.json (which holds
                  its weights' sha256), preset, seed, seconds, prompt path and sha256, timings,
                  token counts, the watermark (on or off, which)
    OUT.png       waveform + spectrogram of prompt | continuation, seam marked
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from continuo.server.audio import write_audio
from continuo.server.continuation import Continuation, ContinuationResult
from continuo.server.plots import plot_continuation
from continuo.server.training.checkpoint import file_sha256
from continuo.server.watermark import WATERMARK, describe


def output_paths(out: Path) -> dict[str, Path]:
    """OUT.wav → its wav, full, json and png paths."""
    out = Path(out)
    stem = out.with_suffix("")
    return {"wav": out, "full": Path(f"{stem}.full{out.suffix}"),
            "json": stem.with_suffix(".json"), "png": stem.with_suffix(".png")}


def model_hashes(pipeline: Continuation) -> dict[str, str]:
    """sha256 of the config.json of the codec, the semantic tokenizer and each stage."""
    model_dir = pipeline.preset.model_path
    folders = {"codec": model_dir / "codec", "semantic": model_dir / "semantic",
               **{f"{name}_lm": folder for name, folder in pipeline.folders.items()}}
    return {name: file_sha256(folder / "config.json") for name, folder in folders.items()}


def sidecar(pipeline: Continuation, result: ContinuationResult, prompt_path: Path,
            seconds: float) -> dict[str, Any]:
    return {
        "prompt": {"path": str(prompt_path), "sha256": file_sha256(prompt_path),
                   "used_samples": len(result.prompt)},
        "seconds": seconds,
        "continuation_samples": len(result.audio),
        "sample_rate": result.sample_rate,
        "seed": result.seed,
        "preset": pipeline.preset.model_dump(mode="json"),
        "model_dir": str(pipeline.preset.model_path),
        "model_sha256": model_hashes(pipeline),
        "timings_s": {k: round(v, 4) for k, v in result.timings_s.items()},
        "tokens": result.tokens,
        "watermark": describe(WATERMARK if result.watermarked else None),
    }


def write_continuation(pipeline: Continuation, result: ContinuationResult, prompt_path: Path,
                       seconds: float, out: Path,
                       extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the four files (see the module doc); their paths by kind. extra: more sidecar
    entries (e.g. the tempo and bars a continuation was asked in)."""
    paths = output_paths(out)
    rate = result.sample_rate
    write_audio(paths["wav"], result.audio[None], rate)
    joined, n = result.joined(), len(result.prompt)
    write_audio(paths["full"], joined[None], rate)
    meta = {**sidecar(pipeline, result, prompt_path, seconds), **(extra or {})}
    paths["json"].write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    plot_continuation(joined[:n], joined[n:], rate, paths["png"],
                      title=f"{Path(prompt_path).name}: {pipeline.preset.name}, seed {result.seed}")
    return paths
