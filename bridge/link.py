"""Ableton Link as a tempo clock (`aalink`, the optional extra `continuo[link]`).

Link keeps one beat timeline shared by every peer on the local network (Ableton Live, Bitwig,
Reason, phone apps...): `LinkClock` joins that session and answers the `Clock` questions (tempo,
beat position at a `time.perf_counter()` time) from it, and can propose a tempo to the session.

aalink is asyncio-based: its `Link` object lives on an event loop that `LinkClock` runs on a
daemon thread of its own. aalink only tells the beat *now* (on Link's own clock: on Linux
CLOCK_MONOTONIC_RAW, while perf_counter is CLOCK_MONOTONIC; on macOS and Windows they are the
same clock), so the timeline is sampled directly in perf_counter time:

    p0 = perf_counter(); beat = link.beat; p1 = perf_counter()
    → the beat at (p0 + p1) / 2, within ±(p1 - p0) / 2   (the narrowest of a few tries)

That sample and the tempo form a `Snapshot`, a straight line beat(t) that `beat_at` evaluates:
a read of one attribute, callable from any thread, never waiting for the loop. The loop takes a
new snapshot every `REFRESH_S`, at once when Link reports a tempo change or a new peer, and
`set_bpm` takes one before it returns, so a step in the session's tempo or a re-aligned timeline
(joining a session) is followed within a fraction of a millisecond, and the two clocks' rates
(they differ by NTP's slew, a few ppm; ≤ 500 ppm by Linux's limit: ≤ 25 µs over 50 ms) never
accumulate. `mapping_error_s()` measures how far `beat_at` is from Link's own beat right now.

Link's timeline runs whether or not another peer is there (a bridge alone keeps its own grid,
and the grid aligns with the session's bars, `quantum` beats each, when a peer appears), so
`beat_at` is never None.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import threading
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from continuo.server.errors import ConfigError, ContinuoError
from continuo.server.musical_time import MAX_BPM, MIN_BPM

log = logging.getLogger(__name__)

REFRESH_S = 0.05
SAMPLE_TRIES = 5
START_TIMEOUT_S = 10.0


class LinkUnavailableError(ContinuoError):
    """Ableton Link support (the `aalink` package) is not installed."""


@dataclass(frozen=True)
class Snapshot:
    """Link's timeline sampled at perf_counter time `t_s`: beat `beat` there, at `bpm`.
    `uncertainty_s`: half the time the reading took (the sample is somewhere in it)."""

    t_s: float
    beat: float
    bpm: float
    uncertainty_s: float

    def beat_at(self, t_s: float) -> float:
        return self.beat + (t_s - self.t_s) * self.bpm / 60.0


def _import_aalink() -> Any:
    try:
        import aalink
    except ImportError as err:
        raise LinkUnavailableError(
            "Ableton Link needs the aalink package: pip install 'continuo[link]'") from err
    return aalink


class LinkClock:
    """A Clock following an Ableton Link session; `quantum` beats per bar (bars align across
    peers). bpm is the tempo proposed if this clock starts the session; joining one, the
    session's tempo wins."""

    name = "link"

    def __init__(self, bpm: float = 120.0, quantum: float = 4.0) -> None:
        self.quantum = _checked_quantum(quantum)
        bpm = _checked_bpm(bpm)
        aalink = _import_aalink()
        self._refresh_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="continuo-link",
                                         daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(aalink, bpm), self._loop)
        try:
            future.result(START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, aalink: Any, bpm: float) -> None:
        link = aalink.Link(bpm)  # on this loop (aalink schedules its callbacks onto it)
        link.quantum = self.quantum
        link.set_tempo_callback(lambda bpm: self._on_change("tempo", bpm))
        link.set_num_peers_callback(lambda n: self._on_change("peers", n))
        link.enabled = True
        self._link = link
        self.refresh()
        self._loop.call_later(REFRESH_S, self._tick)

    def _tick(self) -> None:
        self.refresh()
        self._loop.call_later(REFRESH_S, self._tick)

    def _on_change(self, what: str, value: float) -> None:
        self.refresh()
        log.info("Link %s: %s", what, value)

    def refresh(self) -> Snapshot:
        """Sample Link's timeline now (the narrowest of a few readings) → the new snapshot."""
        link = self._link
        with self._refresh_lock:
            best: Snapshot | None = None
            for _ in range(SAMPLE_TRIES):
                bpm = link.tempo
                p0 = perf_counter()
                beat = link.beat
                p1 = perf_counter()
                if link.tempo != bpm:  # changed under us: read again
                    continue
                if best is None or p1 - p0 < 2 * best.uncertainty_s:
                    best = Snapshot((p0 + p1) / 2, beat, bpm, (p1 - p0) / 2)
            if best is not None:
                self._snapshot = best
            return self._snapshot

    def bpm(self) -> float:
        return self._snapshot.bpm

    def beat_at(self, t_s: float) -> float:
        """The session's beat position at perf_counter time t_s (bar k starts at beat
        k × quantum); from the latest snapshot, so it never blocks."""
        return self._snapshot.beat_at(t_s)

    def set_bpm(self, bpm: float) -> None:
        """Propose a tempo to the session (every peer follows); the beat stays continuous."""
        self._link.tempo = _checked_bpm(bpm)
        self.refresh()

    def peers(self) -> int:
        """How many other Link peers are in the session."""
        return int(self._link.num_peers)

    def mapping_error_s(self) -> float:
        """How far `beat_at` is from Link's own beat now, in seconds at the current tempo
        (the reading's own uncertainty included)."""
        link = self._link
        p0 = perf_counter()
        beat = link.beat
        p1 = perf_counter()
        snapshot = self._snapshot
        error_beats = abs(snapshot.beat_at((p0 + p1) / 2) - beat)
        return error_beats * 60.0 / snapshot.bpm + (p1 - p0) / 2 + snapshot.uncertainty_s

    def close(self) -> None:
        """Leave the session and stop the loop thread."""
        if not self._loop.is_closed() and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._disable(), self._loop).result(
                START_TIMEOUT_S)
        self._stop_loop()

    async def _disable(self) -> None:
        self._link.enabled = False
        self._link.set_tempo_callback(_ignore)  # drop the callbacks' references to self
        self._link.set_num_peers_callback(_ignore)

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()


def _ignore(_value: object) -> None:
    pass


def _checked_bpm(bpm: float) -> float:
    if isinstance(bpm, bool) or not isinstance(bpm, numbers.Real) or not (
            math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ConfigError(f"Link tempo must be {MIN_BPM:g}..{MAX_BPM:g} BPM, got {bpm!r}")
    return float(bpm)


def _checked_quantum(quantum: float) -> float:
    if isinstance(quantum, bool) or not isinstance(quantum, numbers.Real) or not (
            math.isfinite(quantum) and 0 < quantum <= 64):
        raise ConfigError(f"Link quantum (beats per bar) must be > 0 and ≤ 64, got {quantum!r}")
    return float(quantum)
