"""`continuo eval`: our continuations and the baselines, scored the same way on held-out clips.

Clips. From a data folder (one with manifest.json) only the held-out items (splits valid and
test) are used, grouped by piece; from any other folder every audio file soundfile reads
(wav, flac, ogg, mp3; searched recursively) is its own group. A clip is `prompt_s` seconds of
prompt followed by `continuation_s` seconds of the true continuation. Each file long enough is
divided into up to `clips_per_file` equal parts with one clip at a random offset in each, so
no file gives more than that; groups take turns in a seeded random order (every group's first
clip before any group's second, a group's clips in random order), so a long piece cannot
dominate, and the first `clips` clips that load are used. A file that cannot be read, or a
clip whose prompt or truth is silent, is reported (its AudioError message) and skipped; the
next candidate takes its place.

Systems, all at the pipeline's sample rate, all continuing exactly the same prompt (its last
sample is the seam; the model may drop whole semantic frames from the prompt's start, never its
end), each continuation exactly as long as the truth:
- `continuo`: `Continuation.generate(prompt, sr, seconds, seed + clip index)`, seconds rounded
  up to whole semantic frames and the output cut to the truth's length;
- `acoustic_only`: the same with `acoustic_only=True` (the paper's ablation: coarse + fine
  stages without semantic tokens), same seed;
- `true`: the real next seconds;
- `true_codec`: the real next seconds as the codec gives them back (prompt and truth encoded
  and decoded as one clip, the truth's part kept and joined to the prompt like the pipeline's
  output, with the codec's rendering of the prompt's end as its lead-in): the best any model
  speaking through this codec can do, and what the codec alone costs at the seam;
- `repeat_last_bar`: the prompt's last bar looped; a bar is 4 beats at the prompt's tempo
  estimate clamped to [MIN_BPM, MAX_BPM] (120 BPM when none is found), so 1.2–4 s, and never
  longer than the prompt;
- `random_clip`: the true continuation of another clip (another group's when there is one),
  chosen with a generator seeded by (seed, clip index).

The model systems and `true_codec` join the prompt by crossfading into their lead-in over its
last `seam.CROSSFADE_S` (`ContinuationResult.joined`), the others hard; every system's seam
figure covers the same region, those samples and the seam.

Figures are those of `continuation_metrics` (harmonic against the truth, rhythm and timbre
against the prompt), plus the codec's reconstruction of each true continuation (SI-SDR,
log-mel L1 of `codec_metrics`). `continuation_report` writes the results.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from continuo.server.audio import check_samples, downmix, resample, write_audio
from continuo.server.codec_roundtrip import reconstruct
from continuo.server.continuation import Continuation
from continuo.server.data.manifest import MANIFEST_NAME, load_manifest
from continuo.server.errors import AudioError, ConfigError, DataError
from continuo.server.evaluation.codec_metrics import log_mel_l1, si_sdr_db
from continuo.server.evaluation.continuation_metrics import Reference, score_continuation
from continuo.server.evaluation.continuation_report import build_report, write_report
from continuo.server.plots import plot_continuation
from continuo.server.presets import Preset, load_preset
from continuo.server.seam import CROSSFADE_S, SPLICE_S, codec_join, crossfade_join
from continuo.server.tokenizers.codec import AcousticCodec
from continuo.server.training.token_cache import model_tokenizers

log = logging.getLogger(__name__)

SYSTEMS = ("continuo", "acoustic_only", "true", "true_codec", "repeat_last_bar", "random_clip")
MODEL_SYSTEMS = ("continuo", "acoustic_only")
HELD_OUT_SPLITS = ("valid", "test")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
BEATS_PER_BAR = 4
MIN_BPM, MAX_BPM, DEFAULT_BPM = 60.0, 200.0, 120.0


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: clip lengths, how many clips, the seed, which systems."""

    prompt_s: float = 4.0
    continuation_s: float = 4.0
    clips: int = 16
    seed: int = 0
    systems: tuple[str, ...] = SYSTEMS
    clips_per_file: int = 2
    plot_clips: int = 3

    def __post_init__(self) -> None:
        for name in ("prompt_s", "continuation_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 120):
                raise ConfigError(f"{name} must be in (0, 120] seconds, got {value!r}")
        for name, low in (("clips", 1), ("clips_per_file", 1), ("plot_clips", 0), ("seed", 0)):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= low):
                raise ConfigError(f"{name} must be an integer >= {low}, got "
                                  f"{getattr(self, name)!r}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or not self.systems or len(set(self.systems)) != len(self.systems):
            raise ConfigError(f"systems must be distinct names from {', '.join(SYSTEMS)}; got "
                              f"{', '.join(self.systems) or '(none)'}")

    @property
    def clip_s(self) -> float:
        return self.prompt_s + self.continuation_s


@dataclass(frozen=True)
class Source:
    """An audio file clips may be cut from; `group` is its piece (manifest) or the file."""

    path: Path
    group: str
    seconds: float


@dataclass(frozen=True)
class ClipSpec:
    path: Path
    group: str
    start_s: float

    @property
    def name(self) -> str:
        return f"{self.path.stem}@{self.start_s:.2f}s"


@dataclass(frozen=True, eq=False)
class Clip:
    """prompt [T_p] and the true continuation [T_c] that follows it, at the eval rate."""

    spec: ClipSpec
    prompt: np.ndarray
    truth: np.ndarray


# --- clips --------------------------------------------------------------------------------------


def find_sources(folder: Path) -> tuple[list[Source], list[str]]:
    """The held-out items of a data folder, or every readable audio file of any folder; and the
    AudioError messages of the files that could not be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / MANIFEST_NAME).is_file():
        items = [i for split in HELD_OUT_SPLITS for i in load_manifest(folder).split(split)]
        if not items:
            raise DataError(f"{folder / MANIFEST_NAME}: no held-out items (splits "
                            f"{', '.join(HELD_OUT_SPLITS)})")
        return [Source(i.path, i.piece, i.seconds) for i in items], []
    sources, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            sources.append(Source(path, str(path.relative_to(folder)), _duration_s(path)))
        except AudioError as err:
            skipped.append(str(err))
    if not sources:
        raise DataError(f"{folder}: no readable audio files ({', '.join(AUDIO_SUFFIXES)})")
    return sources, skipped


def _duration_s(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as err:
        raise AudioError(f"{path}: not a readable audio file, corrupt or unknown format "
                         f"({err})") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: has no samples")
    return info.frames / info.samplerate


def choose_clips(sources: list[Source], config: EvalConfig) -> list[ClipSpec]:
    """Every candidate clip in the order they are tried (see the module doc), seeded."""
    rng = np.random.default_rng(config.seed)
    groups: dict[str, list[Source]] = {}
    for source in sources:
        groups.setdefault(source.group, []).append(source)
    names = sorted(groups)
    ranked: list[tuple[int, int, ClipSpec]] = []
    for turn, g in enumerate(rng.permutation(len(names))):
        specs = [spec for s in groups[names[g]] for spec in _slots(s, config, rng)]
        ranked += [(rank, turn, specs[i]) for rank, i in enumerate(rng.permutation(len(specs)))]
    ranked.sort(key=lambda r: r[:2])
    return [spec for _, _, spec in ranked]


def _slots(source: Source, config: EvalConfig, rng: np.random.Generator) -> list[ClipSpec]:
    """One clip at a random offset in each of up to clips_per_file equal parts of a file."""
    usable_s = source.seconds - 0.01  # headers round; resampling needs a little room
    n = min(config.clips_per_file, math.floor(usable_s / config.clip_s))
    width = usable_s / max(n, 1)
    return [ClipSpec(source.path, source.group, j * width + rng.uniform(0, width - config.clip_s))
            for j in range(n)]


def load_clips(specs: list[ClipSpec], sample_rate: int,
               config: EvalConfig) -> tuple[list[Clip], list[str]]:
    """The first config.clips candidates that load; the messages of those that did not."""
    clips, skipped = [], []
    for spec in specs:
        if len(clips) == config.clips:
            break
        try:
            clips.append(read_clip(spec, sample_rate, config))
        except AudioError as err:
            skipped.append(str(err))
    return clips, skipped


def read_clip(spec: ClipSpec, sample_rate: int, config: EvalConfig) -> Clip:
    """Read only the clip's span of the file, downmixed and resampled; AudioError if it is
    unreadable, too short, or its prompt or truth is silent."""
    where = f"{spec.path} at {spec.start_s:.2f} s"
    try:
        with sf.SoundFile(str(spec.path)) as f:
            rate = f.samplerate
            f.seek(round(spec.start_s * rate))
            frames = f.read(math.ceil(config.clip_s * rate) + 1, dtype="float32",
                            always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as err:
        raise AudioError(f"{spec.path}: not readable audio ({err})") from err
    samples = downmix(check_samples(frames.T, where, silence_peak=None))
    samples = resample(samples, rate, sample_rate)[0]
    n_prompt = round(config.prompt_s * sample_rate)
    n_truth = round(config.continuation_s * sample_rate)
    if len(samples) < n_prompt + n_truth:
        raise AudioError(f"{where}: only {len(samples) / sample_rate:.2f} s of audio, "
                         f"{config.clip_s:g} s needed")
    prompt, truth = samples[:n_prompt].copy(), samples[n_prompt: n_prompt + n_truth].copy()
    check_samples(prompt[None], f"{where}: prompt")
    check_samples(truth[None], f"{where}: true continuation")
    return Clip(spec, prompt, truth)


# --- systems ------------------------------------------------------------------------------------


def bar_samples(tempo_bpm: float, sample_rate: int, limit: int) -> int:
    """A bar of BEATS_PER_BAR beats at the clamped tempo, in samples, at most `limit`."""
    bpm = DEFAULT_BPM if not tempo_bpm > 0 else min(max(tempo_bpm, MIN_BPM), MAX_BPM)
    return max(1, min(limit, round(BEATS_PER_BAR * 60.0 / bpm * sample_rate)))


def repeat_last_bar(prompt: np.ndarray, n_samples: int, tempo_bpm: float,
                    sample_rate: int) -> np.ndarray:
    """[T] prompt → [n_samples]: its last bar, looped."""
    bar = bar_samples(tempo_bpm, sample_rate, len(prompt))
    return np.resize(prompt[len(prompt) - bar:], n_samples)


def random_partner(index: int, clips: list[Clip], seed: int) -> int | None:
    """Another clip's index, from another group when there is one; None for a single clip."""
    others = [j for j in range(len(clips)) if j != index]
    apart = [j for j in others if clips[j].spec.group != clips[index].spec.group]
    pool = apart or others
    if not pool:
        return None
    return int(pool[np.random.default_rng([seed, index]).integers(len(pool))])


Output = tuple[np.ndarray, np.ndarray]  # a system's continuation [T] and lead-in [L] (L may be 0)
NO_LEAD_IN = np.zeros(0, np.float32)


def model_continuation(pipeline: Continuation, clip: Clip, seed: int,
                       acoustic_only: bool) -> Output:
    """The pipeline's continuation of clip.prompt, cut to the truth's length, and its lead-in."""
    n, hop, sr = len(clip.truth), pipeline.semantic_hop_samples, pipeline.sample_rate
    result = pipeline.generate(clip.prompt, sr, math.ceil(n / hop) * hop / sr, seed=seed,
                               acoustic_only=acoustic_only)
    used = len(result.prompt)
    if not np.array_equal(result.prompt, clip.prompt[len(clip.prompt) - used:]):
        raise RuntimeError(f"{clip.spec.name}: the pipeline's prompt is not the end of the clip's "
                           "prompt, so its continuation would not start at the seam")
    if len(result.audio) < n:
        raise RuntimeError(f"{clip.spec.name}: asked for {n} samples, got {len(result.audio)}")
    return result.audio[:n], result.lead_in


def system_audio(index: int, clips: list[Clip], ref: Reference, pipeline: Continuation | None,
                 codec: AcousticCodec, config: EvalConfig) -> dict[str, Output | None]:
    """Each system's continuation of clip `index` and its lead-in (None: random_clip with a
    single clip)."""
    clip, out = clips[index], {}
    for name in config.systems:
        if name in MODEL_SYSTEMS:
            assert pipeline is not None
            out[name] = model_continuation(pipeline, clip, config.seed + index,
                                           acoustic_only=name == "acoustic_only")
        elif name == "true":
            out[name] = clip.truth, NO_LEAD_IN
        elif name == "true_codec":
            whole, _ = reconstruct(codec, np.concatenate([clip.prompt, clip.truth]))
            n = len(clip.prompt)  # joined to the prompt as the pipeline's output is
            lead = min(n, round(CROSSFADE_S * ref.sr))
            lead_in, audio = codec_join(clip.prompt[-1], whole[n - lead: n], whole[n:],
                                        round(SPLICE_S * ref.sr))
            out[name] = audio, lead_in
        elif name == "repeat_last_bar":
            out[name] = repeat_last_bar(clip.prompt, len(clip.truth), ref.prompt_tempo_bpm,
                                        ref.sr), NO_LEAD_IN
        else:
            partner = random_partner(index, clips, config.seed)
            out[name] = None if partner is None else (clips[partner].truth, NO_LEAD_IN)
    return out


def codec_figures(codec: AcousticCodec, truth: np.ndarray) -> dict[str, float]:
    """SI-SDR (dB) and log-mel L1 of the codec's reconstruction of `truth` [T]."""
    decoded, _ = reconstruct(codec, truth)
    return {"si_sdr_db": si_sdr_db(truth, decoded),
            "log_mel_l1": log_mel_l1(truth, decoded, codec.sample_rate)[0]}


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalResult:
    report: dict[str, Any]  # what results.json holds
    table: str  # results.md
    paths: dict[str, Path]  # results.json, results.md, the bar chart, clip plots and WAVs


def run_eval(folder: Path, preset: Preset | str | Path, out: Path,
             config: EvalConfig | None = None, progress: bool = True) -> EvalResult:
    """Score every system on the clips of `folder`; write results.json, results.md and plots
    to `out`."""
    config = config or EvalConfig()
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    started = time.perf_counter()
    pipeline, codec = _load_model(preset, config)
    sr = int(codec.sample_rate)
    sources, skipped = find_sources(folder)
    clips, unloaded = load_clips(choose_clips(sources, config), sr, config)
    skipped += unloaded
    for message in skipped:
        log.warning("skipped: %s", message)
    if len(clips) == 1 and "random_clip" in config.systems:
        log.warning("random_clip needs a second clip; it is left out")
    if not clips:
        raise DataError(f"{folder}: no clip of {config.clip_s:g} s could be read "
                        f"({len(skipped)} skipped)")
    rows, figures = [], {}
    out = Path(out)
    for i, clip in enumerate(tqdm(clips, desc="eval", unit="clip", disable=not progress)):
        ref = Reference.of(clip.prompt, clip.truth, sr, round(CROSSFADE_S * sr))
        audio = system_audio(i, clips, ref, pipeline, codec, config)
        rows.append(_clip_row(clip, ref, audio, codec))
        if i < config.plot_clips:
            figures.update(_clip_figures(out, i, clip, audio, config, sr))
    info = {"folder": str(folder), "preset": preset.name, "model_dir": str(preset.model_path),
            "sample_rate": sr, "config": asdict(config), "skipped": skipped,
            "seconds": round(time.perf_counter() - started, 1)}
    report = build_report(rows, info)
    table, paths = write_report(out, report)
    return EvalResult(report, table, {**paths, **figures})


def _load_model(preset: Preset, config: EvalConfig) -> tuple[Continuation | None, AcousticCodec]:
    """The pipeline when a model system is asked for, else only the codec (for its rate)."""
    if any(s in MODEL_SYSTEMS for s in config.systems):
        pipeline = Continuation(preset)
        return pipeline, pipeline.tokenizers.codec
    return None, model_tokenizers(preset.model_path, preset.bandwidth_kbps).codec


def _clip_row(clip: Clip, ref: Reference, audio: dict[str, Output | None],
              codec: AcousticCodec) -> dict[str, Any]:
    return {
        "name": clip.spec.name, "path": str(clip.spec.path), "group": clip.spec.group,
        "start_s": round(clip.spec.start_s, 4),
        "prompt_tempo_bpm": ref.prompt_tempo_bpm,
        "prompt_onset_rate_hz": ref.prompt_onset_rate_hz,
        "true_key": None if ref.truth_key is None else ref.truth_key.name,
        "systems": {name: score_continuation(ref, *x) for name, x in audio.items()
                    if x is not None},
        "codec": codec_figures(codec, clip.truth),
    }


def _clip_figures(out: Path, index: int, clip: Clip, audio: dict[str, Output | None],
                  config: EvalConfig, sr: int) -> dict[str, Path]:
    """Plot and WAV (prompt joined to continuation) of our continuation, or the first
    system's."""
    system = "continuo" if "continuo" in audio else config.systems[0]
    if audio[system] is None:
        return {}
    joined = crossfade_join(clip.prompt, audio[system][1], audio[system][0])
    n = len(clip.prompt)
    stem = out / "clips" / f"{index:02d}_{clip.spec.path.stem}_{system}"
    png = plot_continuation(joined[:n], joined[n:], sr, Path(f"{stem}.png"),
                            title=f"{clip.spec.name}: {system}")
    wav = Path(f"{stem}.wav")
    write_audio(wav, joined[None], sr)
    return {f"clip{index}_plot": png, f"clip{index}_wav": wav}
