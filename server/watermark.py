"""The responsible-use watermark: every chunk Continuo generates carries it; `detect` finds it.

Why. AudioLM's authors (Borsos et al. 2022) point out, in discussing its responsible use, that
audio a model continues so faithfully can be passed off as real, and trained a classifier that
tells their generated speech from real speech. Continuo marks what it makes instead: an
inaudible key sequence added to every generated chunk (on by default; `continuo serve
--no-watermark` and `continuo continue --no-watermark` turn it off, which is discouraged), and
`continuo detect FILE` says whether a file carries it, with a p-value. The key below is
public, like the code: the mark labels honest output and survives everyday processing; it does
not stop a determined attacker from removing or forging it.

Embedding (no state, no look-ahead, no seams). The key k is a periodic noise of period P =
`period_samples` (16,384 samples, 0.68 s at 24 kHz), band-limited to `band_hz` with a flat
spectrum and phases drawn from a generator seeded by sha256(key). Sample n of a job (its
absolute position: a chunk's `start_sample` plus its index) becomes

    y[n] = x[n] + strength · k[n mod P] · |x[n]|

The mark is a function of the sample itself and its position only: a chunk is marked without
any other audio, and marking chunk by chunk equals marking the whole (bit for bit; tested), so
chunks join as they did. It follows the music sample by sample (none in silence, loudest under
loud notes, where it is masked), its power is strength² of the music's (SNR = -20·log10
strength: 45 dB by default), and it is linear in gain. Chunk 0's lead-in (the codec's rendering
of the prompt's last 50 ms, at positions -L..-1) is marked too, continuous with chunk 0.

Detection (no alignment needed). The audio is downmixed and resampled to 24 kHz, whitened
(STFT, every bin of the key's band divided by its magnitude: the phase transform of GCC-PHAT,
so neither the music's coloured spectrum nor its loudness dominates the correlation), folded
modulo P (its P-sample segments summed) and correlated with k at all P circular offsets by one
FFT, so a clip cut anywhere, delayed or trimmed is found at whatever offset it starts. The score
is the highest |correlation| over the offsets in units of their robust spread (median absolute
deviation); the p-value is the chance that unmarked audio scores that high somewhere among P
offsets, treating each offset as a standard normal: p = 1 - (1 - 2·Q(score))^P. A file counts
as generated when p ≤ `false_positive_rate` (1e-6: score ≥ `threshold`, 6.54).

Survives by construction: gain (correlation after whitening is scale-free), resampling (the key
lies below 8 kHz; detection resamples back to 24 kHz, soxr keeps the band), offsets and cuts,
mixing (other audio is noise to the correlation) and lossy coding at usual rates — measured in
`evaluation/watermark_eval.py` (`make watermark`, docs/reliability.md). Does not survive: speed
or pitch changes and time-stretching (no stretch search: 0.1 % drifts the key by a sample every
1,000), and clips much shorter than a second. Detection relies on the music leaving room
between its partials, as piano does: on noise-like audio a mark 45 dB down needs long clips
(10 s of white noise scores about 3.8; `strength` 0.02 brings it to 7).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import log_ndtr, ndtri

from continuo.server.audio import resample
from continuo.server.errors import AudioError, ConfigError

# Samples whitened and folded at a time: a whole number of periods, so memory stays bounded
# for a 10-minute file.
_BLOCK_PERIODS = 64


@dataclass(frozen=True)
class WatermarkConfig:
    """The watermark's key, shape, strength and decision rule (see the module doc)."""

    key: str = "continuo-watermark-v1"
    sample_rate: int = 24_000  # the rate the key is defined at and detection runs at
    period_samples: int = 16_384  # at sample_rate
    band_hz: tuple[float, float] = (100.0, 8000.0)
    strength: float = 0.0056  # 45 dB below the music
    n_fft: int = 1024  # whitening STFT (hop n_fft / 4)
    false_positive_rate: float = 1e-6  # per file, unmarked audio

    def __post_init__(self) -> None:
        if not self.key:
            raise ConfigError("watermark key must not be empty")
        if not isinstance(self.sample_rate, int) or self.sample_rate < 8000:
            raise ConfigError(f"watermark sample_rate {self.sample_rate!r} must be >= 8000 Hz")
        if not isinstance(self.period_samples, int) or self.period_samples < 4 * self.n_fft:
            raise ConfigError(f"watermark period_samples {self.period_samples!r} must be a "
                              f"whole number >= 4 n_fft ({4 * self.n_fft})")
        low, high = self.band_hz
        if not 0 < low < high < self.sample_rate / 2:
            raise ConfigError(f"watermark band_hz {self.band_hz} must satisfy 0 < low < high < "
                              f"{self.sample_rate / 2:g} Hz")
        if not 0 < self.strength < 0.5:
            raise ConfigError(f"watermark strength {self.strength!r} must be in (0, 0.5)")
        if not 0 < self.false_positive_rate < 1:
            raise ConfigError(f"false_positive_rate {self.false_positive_rate!r} must be in "
                              "(0, 1)")

    @property
    def period_s(self) -> float:
        return self.period_samples / self.sample_rate

    @property
    def snr_db(self) -> float:
        """Music-to-watermark power ratio: the key has unit power, so -20·log10(strength)."""
        return -20 * math.log10(self.strength)

    @property
    def threshold(self) -> float:
        """The score at which p_value == false_positive_rate."""
        per_offset = -math.expm1(math.log1p(-self.false_positive_rate) / self.period_samples)
        return float(-ndtri(per_offset / 2))

WATERMARK = WatermarkConfig()


def describe(config: WatermarkConfig | None) -> dict[str, Any]:
    """What a sidecar records of the mark: {"on": False} for none, else which mark."""
    if config is None:
        return {"on": False}
    return {"on": True, "key": config.key, "strength": config.strength,
            "snr_db": round(config.snr_db, 2), "band_hz": list(config.band_hz),
            "period_samples": config.period_samples, "sample_rate": config.sample_rate}


@dataclass(frozen=True)
class Detection:
    """What `detect` found. score: the correlation peak in robust standard deviations;
    p_value: the chance of a score this high from unmarked audio; offset_samples: the key's
    position (mod P) at the clip's first sample; seconds: audio analysed."""

    score: float
    p_value: float
    threshold: float
    offset_samples: int
    seconds: float

    @property
    def is_generated(self) -> bool:
        return self.score >= self.threshold

    @property
    def confidence(self) -> float:
        """1 - p_value: how sure the mark is there (not how sure it is absent)."""
        return 1.0 - self.p_value

    def as_dict(self) -> dict[str, Any]:
        return {"generated": self.is_generated, "confidence": self.confidence,
                "score": self.score, "p_value": self.p_value, "threshold": self.threshold,
                "offset_samples": self.offset_samples, "seconds": self.seconds}


def key_sequence(sample_rate: int, config: WatermarkConfig = WATERMARK) -> np.ndarray:
    """The key's one period at `sample_rate`, float32 [P'] with unit power, P' = P · rate /
    config rate (a whole number: 24, 48, 96 kHz for the default). The same band-limited
    periodic signal at every such rate."""
    n = config.period_samples * sample_rate / config.sample_rate
    low, high = config.band_hz
    if n != int(n) or high >= sample_rate / 2:
        raise ConfigError(f"the watermark cannot be embedded at {sample_rate} Hz: its period "
                          f"of {config.period_s:g} s must be whole samples and its band "
                          f"({low:g}-{high:g} Hz) below the Nyquist frequency")
    first, last = math.ceil(low * config.period_s), math.floor(high * config.period_s)
    seed = int.from_bytes(hashlib.sha256(config.key.encode()).digest()[:8], "little")
    phases = np.random.default_rng(seed).uniform(0.0, 2 * np.pi, last - first + 1)
    spectrum = np.zeros(int(n) // 2 + 1, np.complex128)
    spectrum[first:last + 1] = np.exp(1j * phases)
    key = np.fft.irfft(spectrum, int(n))
    return (key / np.sqrt(np.mean(key ** 2))).astype(np.float32)


def embed(pcm: np.ndarray, sample_rate: int, start_sample: int = 0,
          strength: float | None = None, config: WatermarkConfig = WATERMARK) -> np.ndarray:
    """Mark audio [T] or [C, T] whose first sample is sample `start_sample` of its stream (a
    chunk's start; negative before it) → float32, same shape. strength: default the config's."""
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise AudioError(f"watermark: expected audio [T] or [C, T], got shape {x.shape}")
    key = key_sequence(sample_rate, config)
    alpha = np.float32(config.strength if strength is None else strength)
    positions = (int(start_sample) + np.arange(x.shape[-1])) % len(key)
    return x + (alpha * key[positions]) * np.abs(x)


def detect(pcm: np.ndarray, sample_rate: int,
           config: WatermarkConfig = WATERMARK) -> Detection:
    """Look for the mark in audio [T] or [C, T] at any rate (see the module doc)."""
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise AudioError(f"watermark: expected audio [T] or [C, T], got shape {x.shape}")
    x = resample(x.mean(axis=0, keepdims=True), int(sample_rate), config.sample_rate)[0]
    return detect_folded(fold(x, config), len(x) / config.sample_rate, config)


def detect_folded(folded: np.ndarray, seconds: float,
                  config: WatermarkConfig = WATERMARK) -> Detection:
    """`detect` from `fold`'s output [P] (which does not depend on the key: one fold serves
    many keys)."""
    if not np.any(folded):
        return Detection(0.0, 1.0, config.threshold, 0, seconds)
    key = key_sequence(config.sample_rate, config)
    corr = np.fft.irfft(np.fft.rfft(folded) * np.conj(np.fft.rfft(key)), len(key))
    centred = corr - np.median(corr)
    spread = 1.4826 * np.median(np.abs(centred))
    if not spread > 0:
        return Detection(0.0, 1.0, config.threshold, 0, seconds)
    peak = int(np.argmax(np.abs(centred)))  # corr[s] = Σ folded[m + s]·key[m]: s = -offset
    score = float(abs(centred[peak]) / spread)
    return Detection(score, p_value(score, config.period_samples), config.threshold,
                     -peak % len(key), seconds)


def fold(x: np.ndarray, config: WatermarkConfig = WATERMARK) -> np.ndarray:
    """Mono audio [T] at the config's rate → its whitened P-sample segments summed, [P]."""
    period = config.period_samples
    block = period * _BLOCK_PERIODS
    total = np.zeros(period, np.float64)
    for start in range(0, len(x), block):
        part = whiten(x[start:start + block], config)
        part = np.pad(part, (0, -len(part) % period))
        total += part.reshape(-1, period).sum(axis=0)
    return total


def whiten(x: np.ndarray, config: WatermarkConfig = WATERMARK) -> np.ndarray:
    """Mono [T] → [T]: every STFT bin in the key's band at unit magnitude (a floor of 1e-3 of
    the mean keeps digital silence at zero), the others removed."""
    n_fft = config.n_fft
    if len(x) <= n_fft // 2:
        return np.zeros(len(x), np.float32)
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(x, np.float32)), n_fft, n_fft // 4,
                      window=window, return_complex=True)
    freqs = torch.fft.rfftfreq(n_fft, 1 / config.sample_rate)
    band = ((freqs >= config.band_hz[0]) & (freqs <= config.band_hz[1]))[:, None]
    magnitude = spec.abs()
    floor = 1e-3 * magnitude[band.expand_as(magnitude)].mean() + 1e-12
    white = torch.where(band, spec / (magnitude + floor), 0)
    return torch.istft(white, n_fft, n_fft // 4, window=window, length=len(x)).numpy()


def p_value(score: float, n_offsets: int) -> float:
    """The chance that the largest |N(0, 1)| among n_offsets reaches `score`."""
    log_tail = math.log(2.0) + float(log_ndtr(-score))  # log P(|Z| >= score)
    if log_tail < -30:  # 1 - (1 - q)^n ≈ n·q, without rounding q away
        return float(math.exp(math.log(n_offsets) + log_tail))
    return float(-math.expm1(n_offsets * math.log1p(-math.exp(log_tail))))
