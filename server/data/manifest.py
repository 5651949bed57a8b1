"""The data manifest: which audio segments a data folder holds, in which split, how long.

A data folder holds 24 kHz mono FLAC (PCM_16) segments in `train/`, `valid/`, `test/` and a
`manifest.json`::

    {"version": 1, "sample_rate": 24000, "source": "music21" | "folder",
     "items": [{"path": "train/bach_bwv66.6_000.flac", "piece": "bach/bwv66.6",
                "split": "train", "seconds": 29.9}, ...],
     "summary": {"pieces": {"train": 3, ...}, "hours": {"train": 0.02, ...}, "failures": 1},
     "failures": [{"piece": "...", "error": "..."}], ...free extra keys...}

Item paths are stored relative to the folder and returned absolute. A piece never spans two
splits (`load_manifest` checks it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuo.server.errors import DataError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class ManifestItem:
    """One audio segment: its absolute path, the piece it was cut from, its split and length."""

    path: Path
    piece: str
    split: str
    seconds: float

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise DataError(f"{self.path}: split {self.split!r} is not one of {SPLITS}")
        if not self.seconds > 0:
            raise DataError(f"{self.path}: seconds must be > 0, got {self.seconds}")
        if not self.piece:
            raise DataError(f"{self.path}: empty piece id")


@dataclass(frozen=True)
class Failure:
    """A piece (or source file) that could not be turned into audio, and why."""

    piece: str
    error: str


@dataclass(frozen=True)
class Manifest:
    """A data folder's contents. `items` are sorted by path; `extra` holds free extra keys."""

    root: Path
    sample_rate: int
    source: str
    items: tuple[ManifestItem, ...]
    failures: tuple[Failure, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise DataError(f"{self.path}: sample_rate must be > 0, got {self.sample_rate}")
        split_of: dict[str, str] = {}
        for item in self.items:
            seen = split_of.setdefault(item.piece, item.split)
            if seen != item.split:
                raise DataError(
                    f"{self.path}: piece {item.piece!r} spans splits {seen!r} and {item.split!r}"
                )

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.root / MANIFEST_NAME

    def split(self, name: str) -> list[ManifestItem]:
        """The items of split `name` ('train', 'valid' or 'test')."""
        if name not in SPLITS:
            raise DataError(f"{self.path}: unknown split {name!r}, expected one of {SPLITS}")
        return [item for item in self.items if item.split == name]

    @property
    def pieces(self) -> dict[str, str]:
        """piece id → split."""
        return {item.piece: item.split for item in self.items}

    def seconds(self, split: str | None = None) -> float:
        """Total audio seconds, of one split or of all."""
        items = self.items if split is None else self.split(split)
        return sum(item.seconds for item in items)

    def summary(self) -> dict[str, Any]:
        """Pieces and hours per split, and the number of failures."""
        pieces = {s: len({i.piece for i in self.items if i.split == s}) for s in SPLITS}
        hours = {s: round(self.seconds(s) / 3600.0, 4) for s in SPLITS}
        return {"pieces": pieces, "hours": hours, "failures": len(self.failures)}

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object written to `manifest.json`."""
        items = [
            {
                "path": item.path.relative_to(self.root).as_posix(),
                "piece": item.piece,
                "split": item.split,
                "seconds": item.seconds,
            }
            for item in self.items
        ]
        failures = [{"piece": f.piece, "error": f.error} for f in self.failures]
        return {
            **dict(self.extra),
            "version": MANIFEST_VERSION,
            "sample_rate": self.sample_rate,
            "source": self.source,
            "items": items,
            "summary": self.summary(),
            "failures": failures,
        }


def make_manifest(
    root: Path,
    sample_rate: int,
    source: str,
    items: Iterable[ManifestItem],
    failures: Iterable[Failure] = (),
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """A Manifest with items sorted by path and failures by piece (a stable file on disk)."""
    return Manifest(
        root=Path(root),
        sample_rate=sample_rate,
        source=source,
        items=tuple(sorted(items, key=lambda i: i.path.as_posix())),
        failures=tuple(sorted(failures, key=lambda f: f.piece)),
        extra=dict(extra or {}),
    )


def write_manifest(manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (a temp file renamed over it); returns its path."""
    manifest.root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest.to_json(), indent=1)
    fd, tmp = tempfile.mkstemp(dir=manifest.root, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, manifest.path)
    return manifest.path


def load_manifest(root: Path) -> Manifest:
    """Read `root/manifest.json` (`root` may also be the file itself); DataError naming the file
    if it is missing or invalid."""
    root = Path(root).resolve()
    if root.name == MANIFEST_NAME and root.is_file():
        root = root.parent
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: no manifest (make one with `continuo data piano|folder`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON manifest ({err})") from err
    try:
        return _parse(root, raw)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: invalid manifest ({type(err).__name__}: {err})") from err


def _parse(root: Path, raw: Any) -> Manifest:
    path = root / MANIFEST_NAME
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("version") != MANIFEST_VERSION:
        raise DataError(f"{path}: unsupported version {raw.get('version')!r}")
    items = []
    for number, entry in enumerate(raw["items"]):
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{path}: item path {entry['path']!r} must be inside the folder")
        try:
            items.append(
                ManifestItem(
                    path=root / rel,
                    piece=str(entry["piece"]),
                    split=str(entry["split"]),
                    seconds=float(entry["seconds"]),
                )
            )
        except DataError as err:
            raise DataError(f"{path}: item {number}: {err}") from err
    failures = [Failure(str(f["piece"]), str(f["error"])) for f in raw.get("failures", [])]
    known = {"version", "sample_rate", "source", "items", "summary", "failures"}
    return make_manifest(
        root=root,
        sample_rate=int(raw["sample_rate"]),
        source=str(raw["source"]),
        items=items,
        failures=failures,
        extra={k: v for k, v in raw.items() if k not in known},
    )
