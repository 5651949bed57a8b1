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
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

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


TICKS_PER_BEAT = 24  # MIDI clock: 24 ticks per quarter note
WINDOW_TICKS = 96  # the tempo is fitted over the last bar of 4/4: it follows a change within one
MIN_FIT_TICKS = 24  # fewer ticks than a beat (just started, after a gap) keep the last tempo
# a longer silence than two ticks at the slowest tempo ends the run of ticks the fit may span
MAX_TICK_GAP_S = 2 * 60.0 / (MIN_BPM * TICKS_PER_BEAT)


def fit_ticks(tick_times_s: Sequence[float]) -> tuple[float, float]:
    """The least-squares line through consecutive tick times (tick i at time t[i]) →
    (the line's time of the last tick, seconds per tick).

    Robust to the quantisation of a driver that delivers events on period boundaries (JACK:
    256 frames = 5.3 ms at 48 kHz): the slope's error falls as n^-1.5, ~0.01 BPM over a bar.
    """
    n = len(tick_times_s)
    if n < 2:
        raise ValueError(f"a tempo needs at least 2 tick times, got {n}")
    t = np.asarray(tick_times_s, dtype=np.float64)
    t = t - t[-1]  # small numbers: perf_counter times are large
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    mean_s = float(t.mean())
    s_per_tick = float(np.dot(x, t - mean_s) / np.dot(x, x))
    return float(tick_times_s[-1]) + mean_s + s_per_tick * (n - 1) / 2.0, s_per_tick


def estimate_bpm(tick_times_s: Sequence[float]) -> float:
    """The tempo (quarter notes per minute) of consecutive MIDI clock ticks, at 24 per beat, from
    the least-squares slope of their times (`fit_ticks`). ValueError if they do not advance."""
    s_per_tick = fit_ticks(tick_times_s)[1]
    if not s_per_tick > 0:
        raise ValueError("tick times do not advance")
    return 60.0 / (TICKS_PER_BEAT * s_per_tick)


class MidiClock:
    """The tempo and beat of an incoming MIDI clock (24 ppqn with start, stop, continue and song
    position), fed by the MIDI thread (`tick`, `start`, ...) and read from any other.

    Song position follows the MIDI spec: the first tick after a start is beat 0; a stop keeps the
    position, a continue resumes from it (or from a song position pointer sent while stopped).
    `beat_at` is None before the first start and while stopped; between ticks it extrapolates at
    the fitted tempo, never more than one tick past the last tick received (a clock that falls
    silent without a stop holds its beat). The tempo is fitted over the last `window_ticks`
    ticks (ticks count while stopped too: most sources send clock all the time).
    """

    name = "midi"

    def __init__(self, default_bpm: float = 120.0, window_ticks: int = WINDOW_TICKS) -> None:
        if window_ticks < MIN_FIT_TICKS:
            raise ValueError(f"window_ticks must be at least {MIN_FIT_TICKS}, got {window_ticks}")
        self._lock = threading.Lock()
        self._times_s: deque[float] = deque(maxlen=window_ticks)
        self._bpm = _checked(default_bpm)
        self._running = False
        self._next_tick = 0  # song position (in ticks) the next tick marks
        self._last_tick: tuple[int, float] | None = None  # (position, time) since start/continue

    # --- fed by the MIDI thread ---------------------------------------------------------------

    def tick(self, t_s: float) -> None:
        with self._lock:
            if self._times_s and t_s - self._times_s[-1] > MAX_TICK_GAP_S:
                self._times_s.clear()
            if self._times_s:
                t_s = max(t_s, self._times_s[-1])
            self._times_s.append(t_s)
            if self._running:
                self._last_tick = (self._next_tick, t_s)
                self._next_tick += 1

    def start(self, t_s: float) -> None:
        with self._lock:
            self._running, self._next_tick, self._last_tick = True, 0, None

    def stop(self, t_s: float) -> None:
        with self._lock:
            self._running = False

    def continue_(self, t_s: float) -> None:
        with self._lock:
            self._running, self._last_tick = True, None

    def song_position(self, sixteenths: int) -> None:
        """A song position pointer: the next tick is this many 16th notes (6 ticks each) in."""
        with self._lock:
            self._next_tick, self._last_tick = 6 * int(sixteenths), None

    # --- read from anywhere ---------------------------------------------------------------------

    def bpm(self) -> float:
        """The fitted tempo; until a beat of ticks has come, the last one (or the default)."""
        with self._lock:
            times_s = tuple(self._times_s)
        if len(times_s) >= MIN_FIT_TICKS:
            try:
                bpm = min(max(estimate_bpm(times_s), float(MIN_BPM)), float(MAX_BPM))
            except ValueError:  # ticks all at one instant: keep the last tempo
                pass
            else:
                with self._lock:
                    self._bpm = bpm
                return bpm
        with self._lock:
            return self._bpm

    def beat_at(self, t_s: float) -> float | None:
        """Beats since the start (ticks / 24) at time t_s; None when stopped or never started.
        Before the first tick after a start or continue it holds the position ticks resume at."""
        with self._lock:
            running, next_tick, last = self._running, self._next_tick, self._last_tick
            times_s = tuple(self._times_s)
        if not running:
            return None
        if last is None:
            return next_tick / TICKS_PER_BEAT
        position, last_s = last
        if len(times_s) >= MIN_FIT_TICKS:
            fitted_last_s, s_per_tick = fit_ticks(times_s)
        else:
            fitted_last_s, s_per_tick = last_s, 60.0 / (self.bpm() * TICKS_PER_BEAT)
        ticks = position + (t_s - fitted_last_s) / s_per_tick if s_per_tick > 0 else position
        if t_s >= last_s:  # between this tick and the next one, whatever the fit says
            ticks = min(max(ticks, position - 1.0), position + 1.0)
        return ticks / TICKS_PER_BEAT

    def close(self) -> None:
        pass
