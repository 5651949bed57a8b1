"""`continuo demo` (what `make demo` runs): the bundled piano clip continued by 8 bars at its own
tempo with the embedded model, written as WAV (continuation, and prompt + continuation), a JSON
sidecar and a plot (waveform + spectrogram, seam marked).

The clip and its musical facts live in the model folder:

    MODEL_DIR/clip.flac   a held-out piece (never trained on), ending on a bar line
    MODEL_DIR/clip.json   {"bpm": 120, "meter": "3/8", "source": ..., "split": ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuo.server.audio import load_audio
from continuo.server.continuation import Continuation, Progress
from continuo.server.continuation_files import write_continuation
from continuo.server.errors import ConfigError
from continuo.server.musical_time import Meter, bar_to_sample
from continuo.server.presets import Preset, load_preset

CLIP_AUDIO = "clip.flac"
CLIP_INFO = "clip.json"
DEMO_BARS = 8


@dataclass(frozen=True)
class ClipInfo:
    """A bundled clip: its audio file, tempo (quarter-note BPM, the DAW's) and meter."""

    path: Path
    bpm: float
    meter: Meter
    about: dict[str, Any]

    @classmethod
    def load(cls, model_dir: Path) -> ClipInfo:
        """ClipInfo of MODEL_DIR/clip.flac from clip.json; ConfigError naming what is wrong."""
        info_path = Path(model_dir) / CLIP_INFO
        try:
            about = json.loads(info_path.read_text(encoding="utf-8"))
            bpm, meter = float(about["bpm"]), Meter.parse(about["meter"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{info_path}: needs readable JSON with bpm and meter "
                              f"({err})") from err
        return cls(Path(model_dir) / CLIP_AUDIO, bpm, meter, about)

    def bars_seconds(self, bars: int, sample_rate: int) -> float:
        """The exact length of `bars` bars, in seconds of whole samples at sample_rate."""
        return bar_to_sample(bars, self.bpm, self.meter, sample_rate) / sample_rate


def run_demo(
    out_dir: Path,
    preset: Preset | str | Path = "piano",
    bars: int = DEMO_BARS,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Continue the preset's model folder's clip by `bars` bars; returns the written paths
    (wav, full, json, png)."""
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    clip = ClipInfo.load(preset.model_path)
    pipeline = Continuation(preset)
    audio = load_audio(clip.path, sample_rate=pipeline.sample_rate)
    seconds = clip.bars_seconds(bars, pipeline.sample_rate)
    result = pipeline.generate(audio.samples[0], audio.sample_rate, seconds, seed, progress)
    tempo = {"bars": bars, "bpm": clip.bpm, "meter": str(clip.meter), "clip": clip.about}
    return write_continuation(pipeline, result, clip.path, seconds, Path(out_dir) / "demo.wav",
                              extra={"tempo": tempo})
