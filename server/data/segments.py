"""Cutting a piece's audio into training segments, and choosing its split.

Shared by `continuo data piano` and `continuo data folder`: silence trimmed at both ends,
segments of `segment_seconds` (the last one shorter, dropped under `min_segment_seconds`),
written as FLAC PCM_16 into `train/`, `valid/` or `test/`. The split is a hash of the piece id,
so the same piece lands in the same split on every machine and a piece never spans two splits.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from continuo.server.audio import write_audio
from continuo.server.data.manifest import SPLITS, ManifestItem
from continuo.server.errors import ConfigError

MAX_PEAK = 0.99  # a louder piece is scaled down to this peak before it is cut


@dataclass(frozen=True)
class SegmentConfig:
    """How pieces become segments. `valid_fraction`/`test_fraction` of pieces are held out."""

    sample_rate: int = 24000
    segment_seconds: float = 30.0
    min_segment_seconds: float = 1.0
    silence_db: float = -60.0
    valid_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 192000:
            raise ConfigError(f"sample_rate must be in 8000..192000 Hz, got {self.sample_rate}")
        if not self.segment_seconds * self.sample_rate >= 1:
            raise ConfigError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if not 0 <= self.min_segment_seconds <= self.segment_seconds:
            raise ConfigError(
                f"min_segment_seconds must be in 0..segment_seconds ({self.segment_seconds}), "
                f"got {self.min_segment_seconds}"
            )
        if not self.silence_db < 0:
            raise ConfigError(f"silence_db must be < 0 dB, got {self.silence_db}")
        held_out = self.valid_fraction + self.test_fraction
        if min(self.valid_fraction, self.test_fraction) < 0 or held_out > 1:
            raise ConfigError(
                f"valid_fraction and test_fraction must be >= 0 and sum to <= 1, "
                f"got {self.valid_fraction} and {self.test_fraction}"
            )

    @property
    def segment_samples(self) -> int:
        return round(self.segment_seconds * self.sample_rate)

    @property
    def min_segment_samples(self) -> int:
        return max(1, round(self.min_segment_seconds * self.sample_rate))


def assign_split(piece: str, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """'train', 'valid' or 'test' from a SHA-256 of the piece id (the same on every machine)."""
    digest = hashlib.sha256(piece.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    if u < valid_fraction:
        return "valid"
    if u < valid_fraction + test_fraction:
        return "test"
    return "train"


def piece_stem(piece: str) -> str:
    """A file-name stem for a piece id: 'bach/bwv66.6' → 'bach_bwv66.6'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", piece).strip("._")
    return stem or "piece"


def unique_stems(pieces: list[str]) -> dict[str, str]:
    """piece id → stem, adding a short hash where two ids would give the same stem."""
    by_stem: dict[str, list[str]] = {}
    for piece in pieces:
        by_stem.setdefault(piece_stem(piece), []).append(piece)
    stems: dict[str, str] = {}
    for stem, group in by_stem.items():
        for piece in group:
            tag = hashlib.sha256(piece.encode("utf-8")).hexdigest()[:8]
            stems[piece] = stem if len(group) == 1 else f"{stem}-{tag}"
    return stems


def trim_silence(samples: np.ndarray, silence_db: float = -60.0) -> np.ndarray:
    """Drop leading/trailing samples quieter than `silence_db` below the peak. [T] → [T']."""
    magnitude = np.abs(samples)
    peak = float(magnitude.max(initial=0.0))
    if peak == 0.0:
        return samples[:0]
    loud = np.flatnonzero(magnitude > peak * 10.0 ** (silence_db / 20.0))
    return samples[loud[0] : loud[-1] + 1]


def segment_bounds(n_samples: int, segment_samples: int, min_samples: int) -> list[tuple[int, int]]:
    """[start, end) of consecutive segments of `segment_samples`; a short tail under
    `min_samples` is dropped. E.g. (70, 30, 5) → [(0, 30), (30, 60), (60, 70)]."""
    bounds = []
    for i in range(math.ceil(n_samples / segment_samples)):
        start, end = i * segment_samples, min((i + 1) * segment_samples, n_samples)
        if end - start >= min_samples:
            bounds.append((start, end))
    return bounds


def write_segments(
    samples: np.ndarray,
    config: SegmentConfig,
    root: Path,
    piece: str,
    stem: str,
    first_index: int = 0,
) -> list[ManifestItem]:
    """Trim, cut and write mono `samples` [T] (at config.sample_rate) of one piece, scaled
    down as a whole if its peak is above MAX_PEAK.

    Files are `root/<split>/<stem>_<index:03d>.flac`, indices counting from `first_index`
    (a piece made of several scores continues the count). Returns the written items.
    """
    split = assign_split(piece, config.valid_fraction, config.test_fraction)
    assert split in SPLITS
    trimmed = trim_silence(np.asarray(samples, dtype=np.float32), config.silence_db)
    peak = float(np.abs(trimmed).max(initial=0.0))
    if peak > MAX_PEAK:  # one gain for the whole piece, not a different one per segment
        trimmed = trimmed * np.float32(MAX_PEAK / peak)
    bounds = segment_bounds(len(trimmed), config.segment_samples, config.min_segment_samples)
    (root / split).mkdir(parents=True, exist_ok=True)
    items = []
    for index, (start, end) in enumerate(bounds, start=first_index):
        path = root / split / f"{stem}_{index:03d}.flac"
        write_audio(path, trimmed[None, start:end], config.sample_rate, subtype="PCM_16")
        items.append(ManifestItem(path, piece, split, (end - start) / config.sample_rate))
    return items
