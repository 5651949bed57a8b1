"""The stage: what the room hears. The player on the audio device, driven by a tempo clock.

A job's bar 0 goes on the next bar (or beat, or nowhere in particular: `quantize`) of the clock
the musician follows, at the first moment its audio can reach the device; every chunk then goes
on its own bar (`Player.schedule`). The stage also keeps what the bridge reports about playback:
when a job was triggered and when its first sample reached the DAC (trigger-to-sound), and, once
a job's audio has all played, how many chunks started, how late, how far off their bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from continuo.bridge.clock import Clock, next_boundary_s
from continuo.bridge.playback import Player
from continuo.server.engine.chunks import ChunkPlan, chunk_at

QUANTIZE = ("bar", "beat", "none")


@dataclass
class JobOnStage:
    plan: ChunkPlan
    triggered_s: float  # monotonic time the trigger arrived
    origin: int | None = None  # device frame of bar 0, once its first chunk came
    chunks: int = 0  # chunks scheduled
    done: bool = False  # the server sent its last chunk or ended it
    first_sound_s: float | None = None  # monotonic time its first sample reached the DAC
    started: int = 0  # chunks whose first sample has played
    timed: int = 0  # … of them before the device's first underflow in the job
    max_error_s: float = 0.0  # the furthest one of those started from its bar (DAC clock)


@dataclass(frozen=True)
class Played:
    """A job's playback, once all its audio has played: chunks started; samples that came late
    (since the previous report); the furthest a chunk started from its bar on the DAC clock,
    over the `timed` chunks that started before the device's first underflow in the job
    (after an xrun, JACK's DAC-time estimate wanders for seconds, so it measures nothing);
    underflows flagged by the device since the previous report."""

    job: str
    chunks: int
    late_samples: int
    max_start_error_ms: float
    timed: int
    underflows: int


@dataclass
class Stage:
    player: Player
    clock: Clock
    quantize: str = "bar"
    jobs: dict[str, JobOnStage] = field(default_factory=dict)
    _late: int = 0
    _underflows: int = 0

    def quantum_beats(self, plan: ChunkPlan) -> float:
        if self.quantize == "bar":
            return float(plan.meter.quarter_beats_per_bar)
        return 1.0 if self.quantize == "beat" else 0.0

    def add(self, job: str, plan: ChunkPlan, triggered_s: float) -> None:
        self.jobs[job] = JobOnStage(plan, triggered_s)

    def chunk(self, job: str, index: int, pcm: np.ndarray, sample_rate: int) -> int | None:
        """Schedule chunk `index` of `job`; the first one places the job on the clock's grid.
        → its device frame (None: the job is not on stage any more)."""
        entry = self.jobs.get(job)
        if entry is None:
            return None
        if entry.origin is None:
            entry.origin = self.player.start_job(job, self._origin(entry.plan))
        plan = entry.plan
        chunk = chunk_at(plan, index)
        end = chunk.beat_position + plan.chunk_beats
        if plan.total_beats is not None:
            end = min(end, plan.total_beats)
        entry.chunks += 1
        entry.done = entry.done or chunk.last
        return self.player.schedule(job, index, pcm, sample_rate, chunk.beat_position, end,
                                    plan.tempo)

    def _origin(self, plan: ChunkPlan) -> int:
        """The device frame of the clock's next grid line at or after the earliest frame."""
        earliest = self.player.earliest_frame()
        now = perf_counter()
        earliest_s = now + (earliest - self.player.frame_at(now)) / self.player.rate
        beat = self.clock.beat_at(earliest_s)
        if beat is None:
            return earliest
        at = next_boundary_s(beat, earliest_s, self.clock.bpm(), self.quantum_beats(plan))
        return max(earliest, self.player.frame_at(at))

    def stop(self, job: str | None = None) -> None:
        self.player.stop_job(job)
        for name, entry in self.jobs.items():
            if job is None or name == job:
                entry.done = True

    def ended(self, job: str) -> None:
        """The server ended the job (its last chunk, a stop, a preemption)."""
        if job in self.jobs:
            self.jobs[job].done = True

    def poll(self) -> tuple[list[tuple[str, float, float]], list[Played]]:
        """→ (jobs whose first sample reached the DAC since the last poll, with the trigger-to-
        sound seconds and the clock's beat then (-1: the clock was stopped); jobs whose audio
        has all played). Late samples and underflows are the device's since the previous
        report."""
        first: list[tuple[str, float, float]] = []
        for start in self.player.take_starts():
            entry = self.jobs.get(start.job)
            if entry is None:
                continue
            entry.started += 1
            xruns = [f for f in self.player.stats.underflow_frames if f >= entry.origin]
            if not xruns or start.frame < min(xruns):
                entry.timed += 1
                entry.max_error_s = max(entry.max_error_s, abs(start.error_s))
            if entry.first_sound_s is None:
                entry.first_sound_s = start.wall_s
                beat = self.clock.beat_at(start.wall_s)
                first.append((start.job, start.wall_s - entry.triggered_s,
                              -1.0 if beat is None else beat))
        played = []
        for name in [n for n, e in self.jobs.items() if e.done and not self.player.playing(n)]:
            entry, stats = self.jobs.pop(name), self.player.stats
            played.append(Played(name, entry.started, stats.late_samples - self._late,
                                 1e3 * entry.max_error_s, entry.timed,
                                 stats.underflows - self._underflows))
            self._late, self._underflows = stats.late_samples, stats.underflows
        return first, played
