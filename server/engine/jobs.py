"""A job: one continuation stream for one client's track, and what the engine knows of it.

`Job` is mutable and owned by the engine: the control side (generate/param/stop, on the
transport's thread) and the worker touch it only under the engine's lock, except `stream`,
`buffer`, `buffer_label` and `lead_in`, which only the worker writes, outside the lock while
`busy` (it takes `sampling` under the lock before each chunk). Timing: `t0` is when chunk 0
was sent; chunk i is due at t0 + its start / rate (a client playing chunk 0 on arrival needs
chunk i then), and sending it later is a miss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from continuo.server.engine.chunks import ChunkPlan
from continuo.server.engine.recorder import Recording
from continuo.server.engine.stream import StreamState
from continuo.server.presets import Preset

WORK_MARGIN = 1.5  # a chunk is expected to take up to 1.5× this job's average so far


@dataclass(frozen=True)
class Prompt:
    """The prompt a job continues: mono samples [T] at sample_rate, and where they came from."""

    samples: np.ndarray
    sample_rate: int
    source: str  # the clip's path, or "pcm"


@dataclass
class Job:
    id: str
    client: bytes
    track: str
    plan: ChunkPlan
    prompt: Prompt
    preset: Preset  # the job's preset (name, context); sampling below has the params applied
    params: dict[str, float]
    sampling: Preset
    seed: int
    loop: bool
    recording: Recording
    created: float = field(default_factory=time.monotonic)
    next_index: int = 0  # the next chunk to generate
    busy: bool = False  # the worker is generating its next chunk
    ended: bool = False
    params_rev: int = 0  # counts param changes
    heard_rev: int = 0  # the params_rev of the newest generated block; behind: generate now
    t0: float | None = None
    misses: int = 0
    worst_late_s: float = 0.0
    first_chunk_s: float | None = None
    generate_s: float = 0.0  # worker time spent on this job (its share of batched rounds)
    wall_s: float = 0.0  # worker time while this job's chunks were being made (whole rounds)
    rounds: int = 0  # batched rounds (advance_many calls) that made this job's blocks
    batch_rows: int = 0  # the jobs in those rounds, summed (÷ rounds: its mean batch size)
    samples_sent: int = 0
    stream: StreamState | None = None
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer_label: dict | None = None  # params and preset the buffered audio was made with
    param_replies: list[int] = field(default_factory=list)  # seqs of param requests to answer
    lead_in: np.ndarray | None = None

    def due(self, index: int) -> float | None:
        """When chunk `index` is due (monotonic seconds); None before chunk 0 is sent."""
        if self.t0 is None:
            return None
        return self.t0 + self.plan.seconds(self.plan.start_sample(index))

    def work_s(self, index: int) -> float:
        """The seconds chunk `index` is expected to take: its length times the wall time per
        audio second of this job's chunks so far (batched with others: the whole rounds; before
        any audio: its length, the safe side)."""
        plan = self.plan
        length_s = plan.seconds(plan.start_sample(index + 1) - plan.start_sample(index))
        if not self.samples_sent:
            return length_s
        # with a margin: a loaded machine makes one chunk slower than the average
        return length_s * min(WORK_MARGIN * self.wall_s * plan.sample_rate / self.samples_sent,
                              1.0)

    def summary(self) -> dict:
        audio_s = self.samples_sent / self.plan.sample_rate
        return {"chunks": self.next_index, "samples": self.samples_sent, "misses": self.misses,
                "worst_late_s": round(self.worst_late_s, 4),
                "first_chunk_s": None if self.first_chunk_s is None
                else round(self.first_chunk_s, 4),
                "realtime_factor": round(self.generate_s / audio_s, 4) if audio_s else None,
                "mean_batch": round(self.batch_rows / self.rounds, 3) if self.rounds else None}

