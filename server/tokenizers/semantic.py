"""The semantic tokenizer: audio [T] → features [F, D] → nearest k-means centroid → tokens [F].

AudioLM's semantic stream (w2v-BERT layer 7, k-means 1024, 25 Hz) carries long-term structure;
ours comes from a `FeatureExtractor` (see `features.py`: built-in music features, or a local
HuBERT/MERT model), standardised with the training set's mean and std, and quantised to the
nearest of `vocab_size` centroids fitted with scikit-learn's k-means.

A tokenizer folder holds `centroids.safetensors` (tensor "centroids" [vocab_size, dim]) and
`config.json` (extractor config, n_clusters, feature mean/std, sha256 of the weights file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.cluster import MiniBatchKMeans

from continuo.server.audio import check_samples, resample
from continuo.server.errors import AudioError, CheckpointError, ConfigError, DataError
from continuo.server.tokenizers.features import (
    FeatureExtractor,
    HubertFeatures,
    MusicFeatures,
    build_extractor,
)

__all__ = [
    "FeatureExtractor",
    "HubertFeatures",
    "MusicFeatures",
    "SemanticTokenizer",
    "TokenStats",
    "extract_features",
    "token_stats",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "centroids.safetensors"
FORMAT_VERSION = 1


def extract_features(
    extractor: FeatureExtractor, audio: np.ndarray, sample_rate: int, name: str = "audio"
) -> np.ndarray:
    """Validate mono float audio [T] at `sample_rate`, resample it to the extractor's rate (soxr)
    and return its features [F, D] float32. `name` (e.g. the file) starts error messages;
    silence is allowed (it has tokens too)."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        shape = getattr(audio, "shape", type(audio).__name__)
        raise AudioError(f"{name}: expected mono audio [T], got {shape}; downmix it first")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or (
        sample_rate < 1
    ):
        raise AudioError(f"{name}: sample rate {sample_rate!r} is not a positive integer")
    samples = check_samples(audio[None], name, silence_peak=None)  # [1, T]
    return extractor(resample(samples, sample_rate, extractor.sample_rate)[0])


@dataclass(frozen=True)
class TokenStats:
    """How a tokenizer uses its vocabulary on some audio."""

    n_tokens: int
    vocab_size: int
    used_fraction: float  # clusters that occur at least once / vocab_size
    entropy_bits: float  # of the token histogram
    perplexity: float  # 2 ** entropy_bits: the number of equally used clusters it matches

    @property
    def normalised_entropy(self) -> float:
        """entropy / log2(vocab_size) in [0, 1] (1: every cluster equally used)."""
        return self.entropy_bits / math.log2(self.vocab_size) if self.vocab_size > 1 else 0.0


def token_stats(tokens: np.ndarray, vocab_size: int) -> TokenStats:
    """Usage statistics of tokens [N] (any shape, flattened) over a vocabulary of `vocab_size`."""
    counts = np.bincount(np.asarray(tokens).ravel(), minlength=vocab_size)
    total = int(counts.sum())
    probs = counts[counts > 0] / max(total, 1)
    entropy = float(-(probs * np.log2(probs)).sum()) if total else 0.0
    return TokenStats(
        n_tokens=total,
        vocab_size=vocab_size,
        used_fraction=float((counts > 0).sum() / vocab_size),
        entropy_bits=entropy,
        perplexity=2.0**entropy,
    )


class SemanticTokenizer:
    """Feature extractor + standardisation + nearest-centroid quantisation.

    centroids: [vocab_size, dim] in standardised feature space; mean, std: [dim].
    Build one with `SemanticTokenizer.fit(...)` or `SemanticTokenizer.load(folder)`.
    """

    def __init__(
        self, extractor: FeatureExtractor, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> None:
        centroids = np.asarray(centroids, dtype=np.float32)
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        dim = extractor.dim
        if centroids.ndim != 2 or centroids.shape[1] != dim or mean.shape != (dim,) or (
            std.shape != (dim,)
        ):
            raise ConfigError(
                f"semantic tokenizer: centroids {centroids.shape}, mean {mean.shape}, std "
                f"{std.shape} do not fit the {extractor.name} extractor's dim {dim}"
            )
        if not (np.isfinite(centroids).all() and np.isfinite(mean).all() and (std > 0).all()):
            raise ConfigError("semantic tokenizer: non-finite centroids/mean or std ≤ 0")
        self.extractor = extractor
        self.centroids = centroids
        self.mean = mean
        self.std = std
        self._centroids64 = centroids.astype(np.float64)
        self._centroid_norms = (self._centroids64**2).sum(axis=1)  # [vocab_size]

    # --- the contract the stages check ---

    @property
    def vocab_size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def frame_rate(self) -> float:
        return float(self.extractor.frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sample_rate)

    # --- fitting ---

    @classmethod
    def fit(
        cls,
        extractor: FeatureExtractor,
        features_list: Sequence[np.ndarray],
        n_clusters: int,
        seed: int = 0,
    ) -> SemanticTokenizer:
        """Fit mean/std and k-means (seeded MiniBatchKMeans) on features [F_i, D] of many clips;
        the same features and seed give the same centroids."""
        if n_clusters < 2:
            raise ConfigError(f"semantic tokenizer: n_clusters {n_clusters} must be ≥ 2")
        if not features_list:
            raise DataError("semantic tokenizer: no features to fit on")
        features = np.concatenate([np.asarray(f, np.float32) for f in features_list])
        if features.ndim != 2 or features.shape[1] != extractor.dim:
            raise DataError(
                f"semantic tokenizer: features of shape {features.shape} do not have the "
                f"{extractor.name} extractor's dim {extractor.dim}"
            )
        if len(features) < n_clusters:
            raise DataError(
                f"semantic tokenizer: {len(features)} feature frames are fewer than the "
                f"{n_clusters} clusters asked for; use more audio or fewer clusters"
            )
        mean = features.mean(axis=0)
        std = np.maximum(features.std(axis=0), 1e-6)  # a constant dimension stays usable
        normalised = (features - mean) / std
        kmeans = MiniBatchKMeans(
            n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=4096,
            max_no_improvement=20, reassignment_ratio=0.01,
        ).fit(normalised)
        log.info("k-means: %d clusters on %d frames of %d features", n_clusters, len(features),
                 extractor.dim)
        return cls(extractor, kmeans.cluster_centers_, mean, std)

    # --- tokenizing ---

    def features(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono audio [T] at `sample_rate` → raw features [F, D] float32."""
        return extract_features(self.extractor, audio, sample_rate)

    def quantize(self, features: np.ndarray) -> np.ndarray:
        """Raw features [F, D] → tokens [F] int64: the nearest centroid after standardisation."""
        return self._squared_distances(features).argmin(axis=1).astype(np.int64)

    def quantization_error(self, features: np.ndarray) -> float:
        """Mean squared distance of features [F, D] to their nearest centroid, in standardised
        units (k-means inertia per frame; lower is a tighter fit)."""
        return float(np.maximum(self._squared_distances(features).min(axis=1), 0.0).mean())

    def _squared_distances(self, features: np.ndarray) -> np.ndarray:
        """[F, D] → [F, vocab_size] by one matmul, |x|² − 2·x·cᵀ + |c|², in float64 (argmin
        ties go to the lower index, so tokens are deterministic)."""
        x = ((np.asarray(features, np.float32) - self.mean) / self.std).astype(np.float64)
        distances = (x**2).sum(axis=1, keepdims=True) - 2.0 * x @ self._centroids64.T
        return distances + self._centroid_norms

    def tokenize(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono audio [T] at `sample_rate` → tokens [F] int64 in [0, vocab_size), F frames at
        `frame_rate` (F = ceil(duration · frame_rate))."""
        return self.quantize(self.features(audio, sample_rate))

    # --- files ---

    def save(self, folder: Path | str) -> None:
        """Write centroids.safetensors and config.json (with the weights' sha256) to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / WEIGHTS_FILE
        save_file({"centroids": self.centroids}, str(weights))
        extractor_config = self.extractor.config()
        if "folder" in extractor_config:  # a HuBERT folder inside ours travels with it
            extractor_config["folder"] = _portable_path(Path(extractor_config["folder"]), folder)
        config = {
            "format": "continuo-semantic-tokenizer",
            "version": FORMAT_VERSION,
            "extractor": extractor_config,
            "n_clusters": self.vocab_size,
            "dim": int(self.centroids.shape[1]),
            "frame_rate": self.frame_rate,
            "sample_rate": self.sample_rate,
            "feature_mean": [float(v) for v in self.mean],
            "feature_std": [float(v) for v in self.std],
            "sha256": _sha256(weights),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path | str) -> SemanticTokenizer:
        """Read a folder written by `save`; CheckpointError if missing, corrupt or inconsistent."""
        folder = Path(folder)
        config = _read_config(folder / CONFIG_FILE)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{weights}: missing")
        if _sha256(weights) != config["sha256"]:
            raise CheckpointError(f"{weights}: sha256 does not match {folder / CONFIG_FILE}")
        try:
            centroids = load_file(str(weights))["centroids"]
        except (SafetensorError, KeyError, OSError) as err:
            raise CheckpointError(f"{weights}: cannot read centroids: {err}") from err
        if centroids.shape[0] != config["n_clusters"]:
            raise CheckpointError(
                f"{weights}: {centroids.shape[0]} centroids, config says {config['n_clusters']}"
            )
        try:
            extractor = build_extractor(config["extractor"], base=folder)
            return cls(extractor, centroids, config["feature_mean"], config["feature_std"])
        except (ConfigError, TypeError, ValueError) as err:
            raise CheckpointError(f"{folder}: {err}") from err


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a semantic tokenizer folder)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from err
    required = ("extractor", "n_clusters", "feature_mean", "feature_std", "sha256")
    missing = [key for key in required if key not in config] if isinstance(config, dict) else []
    if not isinstance(config, dict) or missing:
        raise CheckpointError(f"{path}: not a semantic tokenizer config (missing {missing})")
    if config.get("version", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {config['version']} is newer than this "
                              f"Continuo reads ({FORMAT_VERSION})")
    return config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _portable_path(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it (the folder can move), else absolute."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())
