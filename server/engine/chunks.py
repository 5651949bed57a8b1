"""Where each chunk of a stream falls: pure beat maths on top of `musical_time`, no state.

A job's continuation is cut into chunks of `chunk_beats` quarter notes at its tempo; chunk i
covers beats [i·chunk_beats, (i+1)·chunk_beats), the last one cut at the job's end (bars ×
beats per bar) when it has one. Both ends of every chunk are rounded from exact times
(`span_samples`), so chunks tile the stream with no gap and no drift: chunk 10,000 starts within
half a sample of its exact time, like chunk 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from continuo.server.errors import ConfigError
from continuo.server.musical_time import (
    MAX_BARS,
    Meter,
    Number,
    bar_beat,
    beats_to_samples,
    exact,
)

MAX_CHUNK_BEATS = 64


@dataclass(frozen=True)
class ChunkPlan:
    """How a job is cut: tempo (quarter-note BPM), meter, chunk length in beats, sample rate,
    and its length in bars (None: until stopped, as in loop mode)."""

    tempo: Fraction
    meter: Meter
    chunk_beats: Fraction
    sample_rate: int
    bars: int | None = None

    @classmethod
    def of(cls, tempo: Number, meter: Meter | str, chunk_beats: Number, sample_rate: int,
           bars: int | None = None) -> ChunkPlan:
        """Checked: ConfigError naming the value when out of range."""
        meter = meter if isinstance(meter, Meter) else Meter.parse(meter)
        beats = exact(chunk_beats)
        if not 0 < beats <= MAX_CHUNK_BEATS:
            raise ConfigError(f"chunk length {chunk_beats} beats is out of range "
                              f"(0, {MAX_CHUNK_BEATS}]")
        if bars is not None and (isinstance(bars, bool) or not isinstance(bars, int)
                                 or not 1 <= bars <= MAX_BARS):
            raise ConfigError(f"bars {bars!r} must be a whole number in 1..{MAX_BARS}")
        plan = cls(exact(tempo), meter, beats, int(sample_rate), bars)
        beats_to_samples(0, tempo, plan.sample_rate)  # checks tempo (as given) and rate
        return plan

    @property
    def total_beats(self) -> Fraction | None:
        return None if self.bars is None else self.bars * self.meter.quarter_beats_per_bar

    @property
    def total_samples(self) -> int | None:
        beats = self.total_beats
        return None if beats is None else beats_to_samples(beats, self.tempo, self.sample_rate)

    @property
    def n_chunks(self) -> int | None:
        beats = self.total_beats
        return None if beats is None else -(-beats // self.chunk_beats)

    def seconds(self, samples: int) -> float:
        return samples / self.sample_rate

    def start_sample(self, index: int) -> int:
        """Where chunk `index` starts (its exact start, rounded half-up)."""
        return beats_to_samples(index * self.chunk_beats, self.tempo, self.sample_rate)


@dataclass(frozen=True)
class Chunk:
    """Chunk `index` of a stream: where it starts (bar, beat within the bar, beat_position from
    the stream's start, absolute sample) and how many samples it holds; `last` ends the job."""

    index: int
    bar: int
    beat: Fraction
    beat_position: Fraction
    start_sample: int
    n_samples: int
    last: bool

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.n_samples


def chunk_at(plan: ChunkPlan, index: int) -> Chunk:
    """The chunk `index` (from 0) of `plan`; ConfigError past the end of a finite plan."""
    if index < 0 or (plan.n_chunks is not None and index >= plan.n_chunks):
        raise ConfigError(f"chunk {index} is outside the job's {plan.n_chunks} chunks")
    start = index * plan.chunk_beats
    end = start + plan.chunk_beats
    total = plan.total_beats
    last = total is not None and end >= total
    if last:
        end = total
    start_sample = beats_to_samples(start, plan.tempo, plan.sample_rate)
    end_sample = beats_to_samples(end, plan.tempo, plan.sample_rate)
    bar, beat = bar_beat(start, plan.meter)
    return Chunk(index, bar, beat, start, start_sample, end_sample - start_sample, last)
