"""The soak: `clients` performers (tests/soak/performer.py) play one real `continuo serve` on
loopback for `duration_s` or `max_actions` actions, whichever comes first, while a monitor
samples the server (tests/soak/checks.py); then every recording is checked.

    result = run_soak(Target(endpoint, pid, out_dir, "clip.flac"), SoakConfig(duration_s=120))
    assert not result.problems(), result.problems()

`run_soak` starts nothing: the caller starts the server (a test with the tiny model, or
`make soak` with the embedded one) and passes its endpoint, pid and recording folder. What the
soak asserts, `SoakResult.problems()` lists as sentences (empty: passed):

- the server process never dies and answers `status` at the end, with no job left running;
  its log holds no traceback;
- no performer or the monitor saw anything wrong (see performer.py for what that covers);
- deadline misses (the server's own count, from each job's sidecar) are at most `miss_budget`
  of the chunks that can be late (every chunk but each job's first, which sets the clock);
- from the warm-up to the end of the playing, RSS stays within max(rss_tolerance_pct of its
  reference, rss_tolerance_mib), and at rest after the soak it is at most that much over the
  reference; open file descriptors, less one per running job (its WAV) and per client
  connection, stay within `fd_tolerance` of theirs (references: the median of the first
  samples after the warm-up); with every client gone and every job ended, the server holds at
  most `fd_tolerance` more descriptors than before the soak;
- every job has a recording, complete and playable (checks.check_recordings).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server_bench_tools import rss_kib
from soak.checks import (
    Flatness,
    Monitor,
    RecordingCheck,
    Sample,
    check_recordings,
    fd_kinds,
    flatness,
    open_fds,
)
from soak.performer import ActionBudget, Performer, Setup

from continuo.bridge.client import Client

MIB = 1024  # KiB
SETTLE_S = 30.0  # after the performers: how long orphaned jobs may take to end


@dataclass(frozen=True)
class Target:
    """A running server: where it listens, its pid, where it records, what to play."""

    endpoint: str
    pid: int
    out_dir: Path
    clip: str  # under its clip root
    extra_presets: tuple[str, ...] = ()  # names switched to besides those it lists
    foreign_presets: frozenset[str] = frozenset()  # listed but of another model: refused
    log: Path | None = None  # the server's log: a traceback in it is a problem


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float
    max_actions: int
    warmup_s: float
    miss_budget: float  # the largest fraction of gradable chunks that may be late
    clients: int = 4
    seed: int = 0
    chunk_beats: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    tempo_bpm: tuple[float, float] = (70.0, 170.0)
    gap_s: tuple[float, float] = (0.5, 3.5)
    sample_every_s: float = 2.0
    rss_tolerance_pct: float = 5.0
    rss_tolerance_mib: float = 20.0
    fd_tolerance: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.warmup_s < self.duration_s:
            raise ValueError(f"warm-up {self.warmup_s} s must be within the soak's "
                             f"{self.duration_s} s")


@dataclass
class SoakResult:
    config: SoakConfig
    wall_s: float
    actions: Counter
    refused: Counter
    reconnects: Counter
    jobs: int
    chunks_heard: int
    recordings: RecordingCheck
    rss_kib: Flatness
    fixed_fds: Flatness
    rss_idle_kib: tuple[int, int]  # before the soak, after it (no client, no job)
    fds_idle: tuple[int, int]  # before, after
    new_fds: dict[str, int]  # open after the soak, not before: what they are → how many
    jobs_running: tuple[float, int]  # mean, max over the samples
    status_s_max: float
    server_cpu_s: float
    other_cpu_s: float
    server_wait_s: float  # runnable, waiting for a CPU
    samples: list[Sample]
    alive: bool
    final_status: dict[str, Any] | None
    problems_seen: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything the soak asserts that did not hold, as sentences; empty: passed."""
        c, out = self.config, list(self.problems_seen)
        if not self.alive:
            out.append("the server process died")
        if self.final_status is None:
            out.append("the server did not answer status at the end")
        elif self.final_status["jobs"]:
            out.append(f"jobs still running at the end: {self.final_status['jobs']}")
        rec = self.recordings
        if rec.miss_fraction > c.miss_budget:
            out.append(f"{rec.misses} of {rec.gradable_chunks} chunks late "
                       f"({rec.miss_fraction:.2%}), over the budget of {c.miss_budget:.2%}")
        if not self.rss_kib.flat:
            out.append(f"RSS not flat after warm-up: {self.rss_kib}")
        if self.rss_idle_kib[1] - self.rss_kib.reference > self.rss_kib.tolerance:
            out.append(f"RSS at rest after the soak, {self.rss_idle_kib[1]} KiB, is over "
                       f"{self.rss_kib.reference:.0f} KiB (after warm-up) + "
                       f"{self.rss_kib.tolerance:.0f} KiB")
        if not self.fixed_fds.flat:
            out.append(f"open fds (less running jobs and connections) not flat after "
                       f"warm-up: {self.fixed_fds}")
        if self.fds_idle[1] - self.fds_idle[0] > c.fd_tolerance:
            out.append(f"idle fds grew from {self.fds_idle[0]} to {self.fds_idle[1]}")
        return out + rec.problems


def run_soak(target: Target, config: SoakConfig) -> SoakResult:
    """Play the soak against `target`; see the module doc."""
    with Client(target.endpoint, timeout_s=30.0, name="soak") as client:
        sample_rate = client.hello()["sample_rate"]
        listed = tuple(p["name"] for p in client.presets()["presets"])
    time.sleep(1.0)  # the server closes that connection
    fds_before, rss_before = open_fds(target.pid), rss_kib(target.pid)
    kinds_before = fd_kinds(target.pid)
    started = time.monotonic()
    setup = Setup(target.endpoint, target.clip, sample_rate, config.chunk_beats,
                  config.tempo_bpm, listed + target.extra_presets, target.foreign_presets,
                  config.gap_s, started + config.duration_s, ActionBudget(config.max_actions))
    performers = [Performer(i, setup, config.seed * 1000 + i) for i in range(config.clients)]
    threads = [threading.Thread(target=p.run, name=f"soak-performer-{p.index}", daemon=True)
               for p in performers]
    with Monitor(target.pid, target.endpoint, config.sample_every_s) as monitor:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(config.duration_s + 300)
            if thread.is_alive():
                monitor.problems.append(f"{thread.name} still running after the soak")
        final_status = _settle(target.endpoint)
    wall_s = time.monotonic() - started
    time.sleep(1.0)  # the server closes the monitor's and the last performers' connections
    alive = _alive(target.pid)
    fds_after, rss_after = (open_fds(target.pid), rss_kib(target.pid)) if alive else (-1, -1)
    new_fds = fd_kinds(target.pid) - kinds_before if alive else Counter()
    expected = {job: t.expected_end for p in performers for job, t in p.jobs.items()}
    monitor.problems += _tracebacks(target.log)
    return _result(config, performers, monitor, check_recordings(target.out_dir, expected),
                   wall_s=wall_s, rss_idle_kib=(rss_before, rss_after),
                   fds_idle=(fds_before, fds_after), new_fds=dict(new_fds),
                   alive=alive, final_status=final_status)


def _result(config: SoakConfig, performers: list[Performer], monitor: Monitor,
            recordings: RecordingCheck, **figures: Any) -> SoakResult:
    tallies = [p.tally for p in performers]
    after = [s for s in monitor.samples if config.warmup_s <= s.t_s <= config.duration_s]
    jobs = [s.jobs for s in monitor.samples] or [0]
    return SoakResult(
        config, actions=sum((t.actions for t in tallies), Counter()),
        refused=sum((t.refused for t in tallies), Counter()),
        reconnects=sum((t.reconnects for t in tallies), Counter()),
        jobs=sum(len(p.jobs) for p in performers),
        chunks_heard=sum(t.chunks_heard for t in tallies), recordings=recordings,
        rss_kib=flatness([s.rss_kib for s in after], config.rss_tolerance_mib * MIB,
                         config.rss_tolerance_pct),
        fixed_fds=flatness([s.fixed_fds for s in after], config.fd_tolerance),
        jobs_running=(sum(jobs) / len(jobs), max(jobs)),
        status_s_max=max((s.status_s for s in monitor.samples), default=float("nan")),
        server_cpu_s=monitor.server_cpu_s, other_cpu_s=monitor.other_cpu_s,
        server_wait_s=monitor.server_wait_s, samples=monitor.samples,
        problems_seen=[q for t in tallies for q in t.problems] + monitor.problems, **figures)


def _settle(endpoint: str) -> dict[str, Any] | None:
    """`status` once no job is left (orphans end within the peer timeout), or the last one."""
    status, deadline = None, time.monotonic() + SETTLE_S
    try:
        with Client(endpoint, timeout_s=30.0, name="soak-final") as client:
            while time.monotonic() < deadline:
                status = client.status()
                if not status["jobs"]:
                    break
                client.recv(timeout_s=0.5)
    except Exception:  # the server is gone or mute: status stays what it last was
        return None
    return status


def _tracebacks(log: Path | None) -> list[str]:
    """Each traceback in the server's log, as a problem (its last lines)."""
    if log is None:
        return []
    chunks = log.read_text(errors="replace").split("Traceback (most recent call last):")[1:]
    return [f"server log: traceback ...{chunk[-600:]}" for chunk in chunks]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state and "\nState:\tX" not in state


