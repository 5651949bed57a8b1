"""Audio in and out: load WAV/FLAC/OGG, resample, downmix, validate, write without clipping.

Samples are numpy float32 `[C, T]` (channels first, like the model's `[B, C, T]`), in [-1, 1].
Files are read with soundfile (libsndfile) and resampled with soxr (HQ). Everything a user or a
client can get wrong — a missing, empty, corrupt, silent, NaN/inf, too long or unsupported file,
or bad PCM from the wire — raises `AudioError` whose message starts with the file (or source)
and says what is wrong. A file's size and duration are checked from its header before any sample
is read, so a huge file is refused without being loaded.

Exact beat/bar ↔ sample arithmetic lives in `continuo.server.musical_time`.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from continuo.server.errors import AudioError, ConfigError

log = logging.getLogger(__name__)

# Longest file `load_audio` reads unless told otherwise: 10 minutes (230 MB of 48 kHz stereo).
DEFAULT_MAX_SECONDS = 600.0
# Peak below which audio counts as silent: -80 dBFS, about 3 LSB of 16-bit PCM.
SILENCE_PEAK = 1e-4
# More channels than this is taken for a mistake (often a [T, C] array passed as [C, T]).
MAX_CHANNELS = 32
# Highest sample rate read (768 kHz, the most any interface records); a header claiming more is
# corrupt.
MAX_SAMPLE_RATE = 768_000

# suffix → libsndfile major format written for it; reading accepts the formats listed in
# _READ_FORMATS whatever the suffix among these.
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}
_READ_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG"})
_DEFAULT_SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}
SUPPORTED_SUFFIXES = tuple(_WRITE_FORMATS)


@dataclass(frozen=True, eq=False)
class Audio:
    """Loaded audio: `samples` float32 [C, T] at `sample_rate`, and what the file held."""

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    path: Path | None = None

    def __post_init__(self) -> None:
        where = str(self.path) if self.path is not None else "audio"
        if not isinstance(self.samples, np.ndarray) or self.samples.dtype != np.float32:
            raise AudioError(f"{where}: samples must be a float32 numpy array")
        if self.samples.ndim != 2:
            raise AudioError(f"{where}: samples must be [C, T], got shape {self.samples.shape}")
        for name in ("sample_rate", "source_sample_rate", "source_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise AudioError(f"{where}: {name} must be a positive integer, got {value!r}")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate


def check_samples(
    samples: np.ndarray, source: str, *, silence_peak: float | None = SILENCE_PEAK
) -> np.ndarray:
    """Validate PCM `[C, T]` from a file or a client; return it as contiguous float32 [C, T].

    `source` names where it came from ("take.wav", "PCM from client") and starts every message.
    Raises AudioError for: not a numpy array, ndim != 2, a non-float dtype (int16 PCM must be
    converted first), zero or more than MAX_CHANNELS channels, zero samples, NaN/inf, and a
    peak below `silence_peak` (None allows silence).
    """
    if not isinstance(samples, np.ndarray):
        raise AudioError(f"{source}: expected a numpy array, got {type(samples).__name__}")
    if samples.ndim != 2:
        raise AudioError(f"{source}: expected samples [C, T], got shape {samples.shape}")
    if samples.dtype.kind != "f":
        raise AudioError(
            f"{source}: samples have dtype {samples.dtype}, expected float32 in [-1, 1]"
        )
    channels, length = samples.shape
    if channels == 0:
        raise AudioError(f"{source}: has no channels (shape {samples.shape})")
    if channels > MAX_CHANNELS:
        raise AudioError(
            f"{source}: {channels} channels (shape {samples.shape}) is more than "
            f"{MAX_CHANNELS}; was a [T, C] array passed as [C, T]?"
        )
    if length == 0:
        raise AudioError(f"{source}: has no samples (shape {samples.shape})")
    out = np.ascontiguousarray(samples, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        bad = np.argwhere(~finite)
        c, t = (int(i) for i in bad[0])
        raise AudioError(
            f"{source}: {len(bad)} NaN/inf samples (first at channel {c}, sample {t})"
        )
    if silence_peak is not None:
        peak = _peak(out)
        if peak < silence_peak:
            raise AudioError(
                f"{source}: is silent (peak {peak:.2e} below {silence_peak:.0e}, "
                f"{_dbfs(peak)} dBFS)"
            )
    return out


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[C, T] at `from_rate` → [C, T'] at `to_rate`, T' ≈ T * to_rate / from_rate (soxr HQ).

    Equal rates return the input itself (as contiguous float32), not a copy.
    """
    _check_rate(from_rate, "from_rate")
    _check_rate(to_rate, "to_rate")
    if samples.ndim != 2:
        raise AudioError(f"resample: expected samples [C, T], got shape {samples.shape}")
    if from_rate == to_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    frames = np.ascontiguousarray(samples.T, dtype=np.float32)  # soxr wants [T, C]
    out = soxr.resample(frames, int(from_rate), int(to_rate), quality="HQ")
    return np.ascontiguousarray(out.reshape(-1, samples.shape[0]).T, dtype=np.float32)


def downmix(samples: np.ndarray) -> np.ndarray:
    """[C, T] → [1, T], the mean of the channels."""
    if samples.ndim != 2:
        raise AudioError(f"downmix: expected samples [C, T], got shape {samples.shape}")
    return samples.mean(axis=0, keepdims=True, dtype=np.float32)


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> Audio:
    """Read a WAV/FLAC/OGG file as float32 [C, T]; downmix when `mono`, resample to
    `sample_rate` when given. Files longer than `max_seconds` are refused from their header,
    before reading. Any bad file raises AudioError naming it.
    """
    path = Path(path)
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, numbers.Real)
        or not 0 < max_seconds < float("inf")
    ):
        raise ConfigError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    if sample_rate is not None:
        _check_rate(sample_rate, "sample_rate")
    info = _probe(path, float(max_seconds))
    samples = check_samples(_read(path, info), str(path))
    if mono and samples.shape[0] > 1:
        samples = check_samples(downmix(samples), f"{path} (downmixed to mono)")
    rate = info.samplerate if sample_rate is None else int(sample_rate)
    samples = resample(samples, info.samplerate, rate)
    if samples.shape[1] == 0:  # a few samples at a high rate resampled to a low one
        raise AudioError(f"{path}: {info.frames} samples at {info.samplerate} Hz are none at "
                         f"{rate} Hz")
    log.debug("loaded %s: %d ch %d Hz → %s at %d Hz", path, info.channels, info.samplerate,
              samples.shape, rate)
    return Audio(samples, rate, info.samplerate, info.channels, path)


def _probe(path: Path, max_seconds: float) -> sf._SoundFileInfo:
    """The file's header, checked: exists, not empty, a supported format, not too long."""
    try:
        if not path.exists():
            raise AudioError(f"{path}: file not found")
        if not path.is_file():
            raise AudioError(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: file is empty (0 bytes)")
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e.strerror or e})") from e
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise AudioError(
            f"{path}: unsupported format '{suffix or '(no extension)'}' "
            f"(Continuo reads {', '.join(SUPPORTED_SUFFIXES)})"
        )
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as e:
        raise AudioError(
            f"{path}: not a readable audio file, corrupt or unknown format ({e})"
        ) from e
    if info.format not in _READ_FORMATS:
        raise AudioError(f"{path}: is {info.format_info}, not WAV, FLAC or OGG")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: has {info.channels} channels (1..{MAX_CHANNELS} supported)")
    if not 1 <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: has an invalid sample rate {info.samplerate} Hz (1.."
                         f"{MAX_SAMPLE_RATE} supported)")
    if info.frames <= 0:
        raise AudioError(f"{path}: has no samples (0 frames)")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise AudioError(
            f"{path}: is {seconds:.1f} s long, longer than the limit of {max_seconds:g} s "
            "(pass a larger max_seconds to load it)"
        )
    return info


def _read(path: Path, info: sf._SoundFileInfo) -> np.ndarray:
    """At most `info.frames` frames as float32 [C, T]."""
    try:
        frames, _ = sf.read(str(path), frames=info.frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as e:
        raise AudioError(f"{path}: corrupt audio data ({e})") from e
    return np.ascontiguousarray(frames.T)


def write_audio(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
) -> float:
    """Write float [C, T] to WAV/FLAC/OGG (format from the suffix) without clipping.

    When the peak is above 1 the whole signal is scaled down to peak 1; returns the gain applied
    (1.0 when none). `subtype` is libsndfile's ("PCM_16", "PCM_24", "FLOAT", "VORBIS"); None
    means PCM_16 for WAV and FLAC, VORBIS for OGG. Parent folders are created. The file is
    written under a temporary name in the same folder and renamed into place, so the final name
    only ever holds a complete file (an old file there stays intact if writing fails).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(
            f"{path}: cannot write format '{path.suffix or '(no extension)'}' "
            f"(Continuo writes {', '.join(SUPPORTED_SUFFIXES)})"
        )
    _check_rate(sample_rate, "sample_rate")
    subtype = subtype or _DEFAULT_SUBTYPES[fmt]
    if not sf.check_format(fmt, subtype):
        raise ConfigError(f"{path}: subtype {subtype!r} cannot be written as {fmt}")
    samples = check_samples(samples, f"{path} (writing)", silence_peak=None)
    peak = _peak(samples)
    gain = 1.0 / peak if peak > 1.0 else 1.0
    if gain != 1.0:
        log.info("%s: peak %.3f, scaled by %.4f so it does not clip", path, peak, gain)
        samples = samples * np.float32(gain)
        np.clip(samples, -1.0, 1.0, out=samples)  # float rounding only: peak is 1 ± 1 ulp
    _write_atomically(path, samples.T, int(sample_rate), fmt, subtype)
    return gain


def _write_atomically(
    path: Path, frames: np.ndarray, sample_rate: int, fmt: str, subtype: str
) -> None:
    """frames [T, C] → a temporary file beside `path`, flushed to disk, renamed to `path`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            sf.write(f, frames, sample_rate, subtype=subtype, format=fmt)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, sf.SoundFileError | OSError | RuntimeError):
            raise AudioError(f"{path}: could not be written ({e})") from e
        raise


def _check_rate(rate: int, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or rate < 1:
        raise ConfigError(f"{name} must be a positive integer number of Hz, got {rate!r}")


def _peak(samples: np.ndarray) -> float:
    return float(np.max(np.abs(samples))) if samples.size else 0.0


def _dbfs(peak: float) -> str:
    return f"{20 * np.log10(peak):.0f}" if peak > 0 else "-inf"
