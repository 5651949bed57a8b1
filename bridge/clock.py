"""Tempo clocks: where the beat is, as a function of time.

Every clock maps a time on the process's monotonic clock (`time.perf_counter()` seconds, the
same clock in every process on Linux) to a beat position and a tempo, so the player can put a
job's bar 0 on the next bar of whatever the musician follows: the bridge's own `InternalClock`,
an incoming MIDI clock, or an Ableton Link session. `next_boundary_s` (pure) is the beat maths
they share.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

from continuo.server.musical_time import MAX_BPM, MIN_BPM


class Clock(Protocol):
    """A tempo source. `beat_at` is None while the clock is stopped (a MIDI stop, no Link
    session yet): a job then starts as soon as its audio exists."""

    name: str

    def bpm(self) -> float: ...

    def beat_at(self, t_s: float) -> float | None: ...

    def close(self) -> None: ...


def next_boundary_s(beat: float, t_s: float, bpm: float, every_beats: float) -> float:
    """The time of the first multiple of `every_beats` at or after `beat` (the beat position at
    time `t_s`), at a steady `bpm`. every_beats 0 means no quantisation: t_s itself."""
    if every_beats <= 0:
        return t_s
    target = math.ceil(beat / every_beats - 1e-9) * every_beats
    return t_s + (target - beat) * 60.0 / bpm


class InternalClock:
    """The bridge's own tempo: beat 0 when it was made; a tempo change keeps the beat position
    continuous (the grid bends at that moment, it never jumps)."""

    name = "internal"

    def __init__(self, bpm: float, t0_s: float) -> None:
        self._lock = threading.Lock()
        self._bpm, self._t0, self._beat0 = _checked(bpm), t0_s, 0.0

    def bpm(self) -> float:
        return self._bpm

    def beat_at(self, t_s: float) -> float:
        with self._lock:
            return self._beat0 + (t_s - self._t0) * self._bpm / 60.0

    def set_bpm(self, bpm: float, t_s: float) -> None:
        with self._lock:
            self._beat0 += (t_s - self._t0) * self._bpm / 60.0
            self._t0, self._bpm = t_s, _checked(bpm)

    def close(self) -> None:
        pass


def _checked(bpm: float) -> float:
    if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ValueError(f"tempo must be {MIN_BPM:g}..{MAX_BPM:g} BPM, got {bpm!r}")
    return float(bpm)
