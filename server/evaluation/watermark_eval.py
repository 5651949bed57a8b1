"""`make watermark`: how often the watermark is found, how rarely it is imagined, how little it
is heard; the figures go to docs/reliability.md ("## Watermark").

    python -m continuo.server.evaluation.watermark_eval [--data data/piano-eval] [--clips 40]

Clips: `clips` held-out items (valid/test splits) of a data folder, at least `seconds` long,
spread over the sorted list, their first `seconds` at 24 kHz (read with the project's loader).
Each is marked at a random stream position (as a proxy for generated audio: the mark does not
depend on what the audio is) and also kept unmarked (real recordings), and both go through
each condition of `CONDITIONS`: as they are; gain -10 dB and +10 dB, each written as 16-bit PCM
(+10 dB clips at full scale); resampled to 44.1 kHz (detected from the 44.1 kHz signal);
mixed with another piece's clip 6 dB below it (RMS); Ogg Vorbis at quality 0.3 (libsndfile
compression level 0.7, ~47 kbit/s at 24 kHz mono); and all of mix, 44.1 kHz and Vorbis in a
row. Figures per condition: marked clips found, unmarked clips flagged, accuracy over both.

Also: the false-positive rate checked against its model with wrong keys (`null_keys` other keys
on every unmarked clip: the share scoring p <= 0.01 should be about 1 %); the mark's audibility
(SNR, log-mel L1 of `codec_metrics`, beside white noise at the same SNR and the codec's own round
trip); and real continuations of the preset's model, generated marked and unmarked, found and
not found, as they are and after the chain.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from continuo.server.audio import load_audio, resample
from continuo.server.data.manifest import load_manifest
from continuo.server.errors import AudioError, DataError
from continuo.server.evaluation.codec_metrics import log_mel_l1
from continuo.server.evaluation.watermark_report import format_section, write_section
from continuo.server.watermark import WATERMARK, describe, detect, detect_folded, embed, fold

log = logging.getLogger(__name__)

SR = WATERMARK.sample_rate
HELD_OUT = ("valid", "test")
Audio = tuple[np.ndarray, int]  # samples [T], sample rate


@dataclass(frozen=True)
class WatermarkEvalConfig:
    clips: int = 40
    seconds: float = 10.0
    null_keys: int = 25
    continuations: int = 3
    prompt_s: float = 4.0
    continuation_s: float = 6.0
    preset: str = "piano"
    seed: int = 0


def _through(y: np.ndarray, rate: int, fmt: str, subtype: str, **kwargs: Any) -> np.ndarray:
    """y written to an in-memory file and read back."""
    buffer = io.BytesIO()
    sf.write(buffer, y, rate, format=fmt, subtype=subtype, **kwargs)
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def gain_pcm16(db: float) -> Callable[[np.ndarray, np.ndarray], Audio]:
    return lambda y, other: (_through(np.clip(y * 10 ** (db / 20), -1, 1), SR, "WAV",
                                      "PCM_16"), SR)


def to_44k1(y: np.ndarray, other: np.ndarray) -> Audio:
    return resample(y[None], SR, 44_100)[0], 44_100


def mix_6db(y: np.ndarray, other: np.ndarray) -> Audio:
    other = other[:len(y)] * np.sqrt(np.mean(y ** 2) / (np.mean(other ** 2) + 1e-20))
    return y + other * 10 ** (-6 / 20), SR


def vorbis(y: np.ndarray, other: np.ndarray, rate: int = SR, quality: float = 0.3) -> Audio:
    return _through(y, rate, "OGG", "VORBIS", compression_level=1 - quality), rate


def chain(y: np.ndarray, other: np.ndarray) -> Audio:
    return vorbis(to_44k1(mix_6db(y, other)[0], other)[0], other, 44_100)


CONDITIONS: dict[str, Callable[[np.ndarray, np.ndarray], Audio]] = {
    "clean": lambda y, other: (y, SR),
    "gain -10 dB (16-bit WAV)": gain_pcm16(-10),
    "gain +10 dB (16-bit WAV, clipped)": gain_pcm16(10),
    "resampled to 44.1 kHz": to_44k1,
    "mixed with another piece at -6 dB": mix_6db,
    "Ogg Vorbis q0.3": vorbis,
    "mix -6 dB → 44.1 kHz → Vorbis q0.3": chain,
    "first 2 s only": lambda y, other: (y[:2 * SR], SR),
    "first 5 s only, Vorbis q0.3": lambda y, other: vorbis(y[:5 * SR], other),
}


@dataclass(frozen=True)
class Clip:
    name: str
    piece: str
    samples: np.ndarray  # [T] at SR


def held_out_clips(folder: Path, config: WatermarkEvalConfig) -> list[Clip]:
    """`config.clips` held-out clips of `config.seconds`, spread over the data folder."""
    manifest = load_manifest(folder)
    items = [i for split in HELD_OUT for i in manifest.split(split) if i.seconds >= config.seconds]
    picks = np.unique(np.linspace(0, len(items) - 1, config.clips).round().astype(int))
    n = round(config.seconds * SR)
    clips = []
    for index in picks if items else []:
        item = items[index]
        try:
            audio = load_audio(item.path, sample_rate=SR)
        except AudioError as err:
            log.warning("skipped: %s", err)
            continue
        clips.append(Clip(item.path.name, item.piece, audio.samples[0, :n]))
    return clips


def partner(index: int, clips: list[Clip]) -> Clip:
    """Another piece's clip to mix in (the next one half the list on)."""
    for step in range(len(clips) // 2, len(clips) + len(clips) // 2):
        other = clips[(index + step) % len(clips)]
        if other.piece != clips[index].piece:
            return other
    return clips[(index + 1) % len(clips)]


def condition_rows(clips: list[Clip], marked: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per condition: the scores of the marked and of the unmarked clips."""
    rows = []
    for name, attack in CONDITIONS.items():
        hits, misses = [], []
        for i, clip in enumerate(clips):
            other = partner(i, clips).samples
            hits.append(detect(*attack(marked[i], other)).score)
            misses.append(detect(*attack(clip.samples, other)).score)
        rows.append(_row(name, hits, misses))
        log.info("%s: %s", name, rows[-1])
    return rows


def _row(name: str, marked: list[float], unmarked: list[float]) -> dict[str, Any]:
    threshold = WATERMARK.threshold
    found = int(np.sum(np.array(marked) >= threshold))
    flagged = int(np.sum(np.array(unmarked) >= threshold))
    return {"condition": name, "n_marked": len(marked), "found": found,
            "n_unmarked": len(unmarked), "flagged": flagged,
            "accuracy": (found + len(unmarked) - flagged) / max(1, len(marked) + len(unmarked)),
            "median_marked": float(np.median(marked)) if marked else None,
            "min_marked": float(np.min(marked)) if marked else None,
            "max_unmarked": float(np.max(unmarked)) if unmarked else None}


def null_calibration(clips: list[Clip], n_keys: int) -> dict[str, Any]:
    """Every unmarked clip against `n_keys` wrong keys: observed rates vs the p-value model."""
    p_values, scores = [], []
    for clip in clips:
        folded = fold(clip.samples)
        for k in range(n_keys):
            found = detect_folded(folded, len(clip.samples) / SR,
                                  replace(WATERMARK, key=f"null-{k}"))
            p_values.append(found.p_value)
            scores.append(found.score)
    p = np.array(p_values)
    return {"trials": len(p), "rate_p_le_0.01": float(np.mean(p <= 0.01)),
            "rate_p_le_0.001": float(np.mean(p <= 0.001)), "max_score": float(np.max(scores)),
            "flagged": int(np.sum(np.array(scores) >= WATERMARK.threshold))}


def audibility(clips: list[Clip], marked: list[np.ndarray], codec: Any | None) -> dict[str, Any]:
    """Mean SNR and log-mel L1 of the mark, of white noise as strong, of the codec's round trip."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[float, ...]]] = {"watermark": [], "white noise": [], "codec": []}
    for clip, y in zip(clips, marked, strict=True):
        x = clip.samples
        noise = rng.standard_normal(len(x)).astype(np.float32)
        noise *= np.sqrt(np.sum((y - x) ** 2) / np.sum(noise ** 2))
        tests = {"watermark": y, "white noise": x + noise}
        if codec is not None:
            from continuo.server.codec_roundtrip import reconstruct

            tests["codec"] = reconstruct(codec, x)[0]
        for name, test in tests.items():
            snr = 10 * np.log10(np.sum(x ** 2) / max(np.sum((test - x) ** 2), 1e-20))
            rows[name].append((snr, *log_mel_l1(x, test, SR)))
    return {name: dict(zip(("snr_db", "log_mel_l1", "log_mel_l1_below_3k8"),
                           np.mean(values, axis=0).tolist(), strict=True))
            for name, values in rows.items() if values}


def continuation_rows(clips: list[Clip], config: WatermarkEvalConfig, pipeline: Any
                      ) -> list[dict[str, Any]]:
    """Continuations of the first prompt_s of `continuations` clips (spread), marked and not."""
    picks = np.linspace(0, len(clips) - 1, config.continuations).round().astype(int)
    scores: dict[str, list[float]] = {}
    for n, index in enumerate(picks):
        prompt = clips[index].samples[:round(config.prompt_s * SR)]
        other = partner(int(index), clips).samples
        for mark in (True, False):
            out = pipeline.generate(prompt, SR, config.continuation_s, seed=config.seed + n,
                                    watermark=mark).audio
            for name in ("clean", "mix -6 dB → 44.1 kHz → Vorbis q0.3"):
                key = f"{'marked' if mark else 'unmarked'}|{name}"
                scores.setdefault(key, []).append(detect(*CONDITIONS[name](out, other)).score)
    rows = []
    for name in ("clean", "mix -6 dB → 44.1 kHz → Vorbis q0.3"):
        rows.append(_row(f"continuations, {name}", scores[f"marked|{name}"],
                         scores[f"unmarked|{name}"]))
    return rows


def run(folder: Path, config: WatermarkEvalConfig) -> dict[str, Any]:
    """Every figure of the module doc, as a dict (see `watermark_report.format_section`)."""
    started, timings = time.perf_counter(), {}
    clips = held_out_clips(folder, config)
    if len(clips) < 2:
        raise DataError(f"{folder}: fewer than 2 held-out clips of {config.seconds:g} s")
    rng = np.random.default_rng(config.seed)
    marked = [embed(c.samples, SR, int(rng.integers(0, 10**9))) for c in clips]
    pipeline = None
    if config.continuations:
        from continuo.server.continuation import Continuation

        pipeline = Continuation(config.preset)

    def timed(name: str, work: Callable[[], Any]) -> Any:
        begun = time.perf_counter()
        result = work()
        timings[name] = round(time.perf_counter() - begun, 1)
        log.info("%s done in %.1f s", name, timings[name])
        return result

    codec = None if pipeline is None else pipeline.tokenizers.codec
    results = {"config": asdict(config), "data": str(folder), "clips": len(clips),
               "pieces": len({c.piece for c in clips}), "watermark": describe(WATERMARK),
               "threshold": WATERMARK.threshold,
               "conditions": timed("conditions", lambda: condition_rows(clips, marked)),
               "null": timed("null", lambda: null_calibration(clips, config.null_keys)),
               "audibility": timed("audibility", lambda: audibility(clips, marked, codec)),
               "continuations": [] if pipeline is None else timed(
                   "continuations", lambda: continuation_rows(clips, config, pipeline))}
    results["timings_s"] = timings
    results["wall_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m continuo.server.evaluation.watermark_eval",
                                description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/piano-eval"),
                   help="data folder with manifest.json (held-out splits used)")
    p.add_argument("--clips", type=int, default=WatermarkEvalConfig.clips)
    p.add_argument("--seconds", type=float, default=WatermarkEvalConfig.seconds)
    p.add_argument("--continuations", type=int, default=WatermarkEvalConfig.continuations,
                   help="continuations to generate with the preset's model (0: none)")
    p.add_argument("--preset", default=WatermarkEvalConfig.preset)
    p.add_argument("--report", type=Path, help="markdown file whose '## Watermark' section "
                   "to write (e.g. docs/reliability.md)")
    p.add_argument("--out", type=Path, default=Path("outputs/watermark"),
                   help="folder for results.json (default outputs/watermark)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = WatermarkEvalConfig(clips=args.clips, seconds=args.seconds,
                                 continuations=args.continuations, preset=args.preset)
    results = run(args.data, config)
    command = " ".join(["python -m continuo.server.evaluation.watermark_eval",
                        *(argv if argv is not None else sys.argv[1:])])
    section = format_section(results, command)
    print(section)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.report:
        write_section(args.report, section)
        print(f"wrote {args.report} (## Watermark) and {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
