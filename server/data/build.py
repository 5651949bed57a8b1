"""Running a data build: pieces in parallel, progress bar, resume, manifest.

`build_dataset` is the loop both `continuo data piano` and `continuo data folder` run: it skips
pieces the progress log already holds, renders the rest with `worker` (in-process for one job,
a process pool for more), records each result as it finishes, stops starting new pieces once
`max_hours` of audio exist, and writes `manifest.json` (every half minute and at the end, also
when interrupted) so training can start on a partial data set.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from continuo.server.data.manifest import Manifest, make_manifest, write_manifest
from continuo.server.data.progress import PieceResult, ProgressLog, folder_lock
from continuo.server.errors import DataError

log = logging.getLogger(__name__)

Task = TypeVar("Task")
MANIFEST_EVERY_S = 30.0


def build_dataset(
    out: Path,
    tasks: Mapping[str, Task],
    worker: Callable[[Task], PieceResult],
    *,
    source: str,
    sample_rate: int,
    settings: dict[str, Any],
    jobs: int = 1,
    max_hours: float | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> Manifest:
    """Render `tasks` (piece id → task, in order) into `out`; returns the written manifest.

    `worker` must be a module-level function (it is sent to worker processes); it returns a
    PieceResult and reports a bad piece as `error`, never by raising.
    """
    if jobs < 1:
        raise DataError(f"jobs must be >= 1, got {jobs}")
    out = Path(out)
    with folder_lock(out):
        progress = ProgressLog(out, {"source": source, "sample_rate": sample_rate, **settings})
        done = progress.done
        todo = [p for p in tasks if p not in done or (retry_failed and done[p].error)]
        before_s = sum(r.seconds for r in done.values())
        log.info("%d pieces to render, %d already done (%.2f h)", len(todo), len(done),
                 before_s / 3600)
        run = _RunStats(before_s, float("inf") if max_hours is None else max_hours * 3600.0)
        write = functools.partial(_write, out, progress, source, sample_rate, settings, run)
        try:
            results = _results(todo, tasks, worker, jobs, run.enough)
            _record(results, progress, run, write, len(todo), show_progress)
        finally:
            manifest = write()
    log.info("%s: %s; this run %.0f s of audio in %.0f s (%.1fx realtime)", manifest.path,
             manifest.summary(), run.audio_s, run.wall_s, run.speed_x)
    return manifest


def _record(
    results: Iterator[PieceResult],
    progress: ProgressLog,
    run: _RunStats,
    write: Callable[[], Manifest],
    total: int,
    show_progress: bool,
) -> None:
    """Log each result as it comes, with a progress bar; rewrite the manifest now and then."""
    last_write = time.monotonic()
    with tqdm(total=total, unit="piece", disable=not show_progress, dynamic_ncols=True) as bar:
        for result in results:
            progress.add(result)
            run.add(result)
            bar.update(1)
            bar.set_postfix(hours=f"{run.total_s / 3600:.2f}", failed=run.failures,
                            speed=f"{run.speed_x:.0f}x")
            if time.monotonic() - last_write > MANIFEST_EVERY_S:
                write()
                last_write = time.monotonic()


def _results(
    todo: list[str],
    tasks: Mapping[str, Task],
    worker: Callable[[Task], PieceResult],
    jobs: int,
    enough: Callable[[], bool],
) -> Iterator[PieceResult]:
    """Results in completion order; no new piece starts once `enough()` is true."""
    if jobs == 1:
        for piece in todo:
            if enough():
                return
            yield worker(tasks[piece])
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    pending: set[Future[PieceResult]] = set()
    queue = iter(todo)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        try:
            while True:
                while len(pending) < 2 * jobs and not enough():
                    piece = next(queue, None)
                    if piece is None:
                        break
                    pending.add(pool.submit(worker, tasks[piece]))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BrokenProcessPool as err:
            raise DataError(f"a worker process died ({err}); run again to resume") from err
        finally:
            for future in pending:
                future.cancel()


class _RunStats:
    """Totals of this run: audio produced, wall time, summed stage timings, failures; whether
    the folder (`before_s` from earlier runs plus this run's audio) has reached `limit_s`."""

    def __init__(self, before_s: float, limit_s: float) -> None:
        self.before_s = before_s
        self.limit_s = limit_s
        self.start = time.monotonic()
        self.audio_s = 0.0
        self.pieces = 0
        self.failures = 0
        self.skipped_scores = 0
        self.timing_s: dict[str, float] = {}

    def add(self, result: PieceResult) -> None:
        self.pieces += 1
        self.failures += result.error is not None
        self.skipped_scores += len(result.skipped)
        self.audio_s += result.seconds
        for stage, seconds in result.timing_s.items():
            self.timing_s[stage] = self.timing_s.get(stage, 0.0) + seconds

    @property
    def total_s(self) -> float:
        return self.before_s + self.audio_s

    def enough(self) -> bool:
        return self.total_s >= self.limit_s

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.start

    @property
    def speed_x(self) -> float:
        """Audio seconds produced per wall second."""
        return self.audio_s / max(self.wall_s, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {
            "pieces": self.pieces,
            "failures": self.failures,
            "skipped_scores": self.skipped_scores,
            "audio_s": round(self.audio_s, 2),
            "wall_s": round(self.wall_s, 2),
            "speed_x_realtime": round(self.speed_x, 2),
            "stage_cpu_s": {k: round(v, 2) for k, v in sorted(self.timing_s.items())},
        }


def _write(
    out: Path,
    progress: ProgressLog,
    source: str,
    sample_rate: int,
    settings: dict[str, Any],
    run: _RunStats,
) -> Manifest:
    results = progress.done.values()
    manifest = make_manifest(
        root=out,
        sample_rate=sample_rate,
        source=source,
        items=[item for r in results for item in r.items],
        failures=[r.failure for r in results if r.failure is not None],
        extra={"settings": settings, "last_run": run.to_json()},
    )
    write_manifest(manifest)
    return manifest
