"""The progress log that makes data building resumable: one JSON line per finished piece.

`OUT/progress.jsonl` starts with a settings line; each later line records one piece, rendered
(its items) or failed (its error). A run that is stopped (Ctrl-C, a crash, a power cut) leaves
at worst one torn last line, which is ignored; the next run skips every piece recorded and
renders the rest. Settings that change what is rendered (sample rate, segment length, source)
must match the log's, otherwise the run stops with a DataError rather than mixing two data sets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuo.server.data.manifest import Failure, ManifestItem
from continuo.server.errors import DataError

PROGRESS_NAME = "progress.jsonl"
LOCK_NAME = ".lock"


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a data folder; DataError if another run holds it."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_NAME).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DataError(f"{root}: another `continuo data` run is writing here") from err
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class PieceResult:
    """What became of one piece: its segments, or the error that stopped it; stage timings;
    `skipped`: why some of its scores (tunes of an ABC opus) were left out, if any were."""

    piece: str
    items: tuple[ManifestItem, ...] = ()
    error: str | None = None
    timing_s: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return sum(item.seconds for item in self.items)

    @property
    def failure(self) -> Failure | None:
        return None if self.error is None else Failure(self.piece, self.error)


class ProgressLog:
    """Append-only record of finished pieces in `root/progress.jsonl`."""

    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.root = Path(root)
        self.path = self.root / PROGRESS_NAME
        self.settings = settings
        self.done: dict[str, PieceResult] = {}
        if self.path.exists():
            self._read()
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._append({"settings": settings})

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):  # a torn last line: cut it so new lines start clean
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text, encoding="utf-8")
        lines = text.splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{self.path}: line {number} is not JSON ({err})") from err
        if not records or records[0].get("settings") != self.settings:
            found = records[0].get("settings") if records else None
            raise DataError(
                f"{self.path}: made with other settings ({found}, now {self.settings}); "
                "use another output folder or delete it"
            )
        for record in records[1:]:
            result = self._result(record)
            self.done[result.piece] = result

    def _result(self, record: dict[str, Any]) -> PieceResult:
        items = tuple(
            ManifestItem(self.root / i["path"], record["piece"], i["split"], float(i["seconds"]))
            for i in record.get("items", [])
        )
        return PieceResult(
            record["piece"], items, record.get("error"), record.get("timing_s", {}),
            tuple(record.get("skipped", ())),
        )

    def add(self, result: PieceResult) -> None:
        """Record a finished piece (flushed at once, so a later crash keeps it)."""
        items = [
            {
                "path": item.path.relative_to(self.root).as_posix(),
                "split": item.split,
                "seconds": item.seconds,
            }
            for item in result.items
        ]
        record = {"piece": result.piece, "items": items, "error": result.error}
        record["timing_s"] = {k: round(v, 4) for k, v in result.timing_s.items()}
        if result.skipped:
            record["skipped"] = list(result.skipped)
        self._append(record)
        self.done[result.piece] = result

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
