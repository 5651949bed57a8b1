"""Fit the semantic tokenizer on a data folder (`continuo train semantic DATA --out DIR`).

Features of the manifest's train split (at most `max_hours`, pieces in a seeded random order)
→ k-means → tokenizer folder; then the tokens of the train and valid splits are counted: the
fraction of clusters used, the entropy of the token histogram, and the quantisation error (mean
squared distance to the nearest centroid, in standardised units; a valid error far above the
train error means the clusters fit the train set only). The report is also written to
`DIR/train_report.json`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from continuo.server.audio import load_audio
from continuo.server.data.manifest import ManifestItem, load_manifest
from continuo.server.errors import AudioError, ConfigError, DataError
from continuo.server.tokenizers.features import FeatureExtractor
from continuo.server.tokenizers.semantic import SemanticTokenizer, TokenStats, token_stats

log = logging.getLogger(__name__)

REPORT_NAME = "train_report.json"


@dataclass(frozen=True)
class SplitReport:
    """Tokens of one split under the fitted tokenizer."""

    items: int
    audio_s: float
    stats: TokenStats
    quantization_error: float


@dataclass(frozen=True)
class SemanticTrainReport:
    extractor: dict[str, Any]
    n_clusters: int
    skipped_items: int  # unreadable audio, logged and left out
    features_per_s: float  # audio seconds per second of feature extraction (× realtime)
    train: SplitReport
    valid: SplitReport | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def take_hours(
    items: Sequence[ManifestItem], max_hours: float | None, seed: int
) -> list[ManifestItem]:
    """The items in a seeded random order, cut after `max_hours` of audio (None: all)."""
    order = np.random.default_rng(seed).permutation(len(items))
    chosen, seconds = [], 0.0
    for i in order:
        if max_hours is not None and seconds >= max_hours * 3600.0:
            break
        chosen.append(items[i])
        seconds += items[i].seconds
    return chosen


def extract_split(
    extractor: FeatureExtractor,
    items: Sequence[ManifestItem],
    description: str,
    show_progress: bool = True,
) -> tuple[list[np.ndarray], float, int, float]:
    """Features [F_i, D] of each readable item; (features, audio seconds, skipped, seconds
    spent). Unreadable items are logged and skipped."""
    features, audio_s, skipped, spent_s = [], 0.0, 0, 0.0
    total_s = sum(item.seconds for item in items)
    with tqdm(total=round(total_s), unit="s", desc=description, disable=not show_progress) as bar:
        for item in items:
            try:
                audio = load_audio(item.path, sample_rate=extractor.sample_rate)
            except AudioError as err:
                log.warning("skipping %s", err)
                skipped += 1
                continue
            start = time.perf_counter()
            features.append(extractor(audio.samples[0]))
            spent_s += time.perf_counter() - start
            audio_s += audio.seconds
            bar.update(round(audio_s) - bar.n)
    return features, audio_s, skipped, spent_s


def split_report(
    tokenizer: SemanticTokenizer, features: Sequence[np.ndarray], audio_s: float
) -> SplitReport:
    stacked = np.concatenate(features)
    return SplitReport(
        items=len(features),
        audio_s=round(audio_s, 2),
        stats=token_stats(tokenizer.quantize(stacked), tokenizer.vocab_size),
        quantization_error=tokenizer.quantization_error(stacked),
    )


def train_semantic(
    data: Path,
    out: Path,
    extractor: FeatureExtractor,
    n_clusters: int = 512,
    max_hours: float | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> SemanticTrainReport:
    """Fit a tokenizer on `data`'s train split, save it to `out`, evaluate on train and valid."""
    if max_hours is not None and not max_hours > 0:
        raise ConfigError(f"--max-hours must be > 0, got {max_hours}")
    manifest = load_manifest(data)
    train_items = take_hours(manifest.split("train"), max_hours, seed)
    if not train_items:
        raise DataError(f"{manifest.path}: the train split is empty")
    train, train_s, skipped, spent_s = extract_split(extractor, train_items, "features (train)",
                                                     show_progress)
    if not train:
        raise DataError(f"{manifest.path}: none of the {len(train_items)} train items is readable")
    tokenizer = SemanticTokenizer.fit(extractor, train, n_clusters, seed=seed)
    tokenizer.save(out)
    valid_items = take_hours(manifest.split("valid"), max_hours, seed)
    valid, valid_s, valid_skipped, _ = extract_split(extractor, valid_items, "features (valid)",
                                                     show_progress)
    report = SemanticTrainReport(
        extractor=extractor.config(),
        n_clusters=n_clusters,
        skipped_items=skipped + valid_skipped,
        features_per_s=round(train_s / max(spent_s, 1e-9), 1),
        train=split_report(tokenizer, train, train_s),
        valid=split_report(tokenizer, valid, valid_s) if valid else None,
    )
    (Path(out) / REPORT_NAME).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def format_report(report: SemanticTrainReport) -> str:
    """A few human lines: cluster usage, entropy, quantisation error per split."""
    lines = [
        f"semantic tokenizer: {report.extractor['name']} features, {report.n_clusters} clusters,"
        f" extraction {report.features_per_s:.0f}x realtime, {report.skipped_items} items skipped"
    ]
    for name, split in (("train", report.train), ("valid", report.valid)):
        if split is None:
            lines.append(f"  {name}: no items")
            continue
        s = split.stats
        lines.append(
            f"  {name}: {split.items} items, {split.audio_s / 60:.1f} min, {s.n_tokens} tokens; "
            f"clusters used {s.used_fraction:.1%}, entropy {s.entropy_bits:.2f} bits "
            f"({s.normalised_entropy:.1%} of max, perplexity {s.perplexity:.0f}), "
            f"quantisation error {split.quantization_error:.3f}"
        )
    return "\n".join(lines)
