"""Tempo clocks (pure): the internal clock, beat boundaries, the MIDI clock's tempo fit and its
start/stop/continue semantics, on synthetic tick times quantised like JACK's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from continuo.bridge.clock import (
    MAX_TICK_GAP_S,
    TICKS_PER_BEAT,
    InternalClock,
    MidiClock,
    estimate_bpm,
    fit_ticks,
    next_boundary_s,
)

PERIOD_S = 256 / 48_000  # JACK at 48 kHz, 256-frame periods: events land on 5.3 ms steps
T0_S = 12_345.678  # a perf_counter-like origin: large, not a multiple of anything


def quantised_ticks(bpm: float, n: int, rng: np.random.Generator, t0_s: float = T0_S,
                    jitter_s: float = 0.5e-3) -> np.ndarray:
    """n MIDI clock tick times at bpm, each sent a little late (jitter) and delivered on the
    next JACK period boundary."""
    sent_s = t0_s + np.arange(n) * 60.0 / (bpm * TICKS_PER_BEAT) + rng.uniform(0, jitter_s, n)
    return np.ceil(sent_s / PERIOD_S) * PERIOD_S


def feed(clock: MidiClock, times_s: np.ndarray) -> None:
    for t in times_s:
        clock.tick(float(t))


# --- InternalClock, next_boundary_s --------------------------------------------------------------


def test_internal_clock_tempo_change_keeps_beats_continuous() -> None:
    clock = InternalClock(120.0, t0_s=10.0)
    assert clock.beat_at(11.0) == pytest.approx(2.0)
    clock.set_bpm(60.0, 11.0)
    assert clock.beat_at(11.0) == pytest.approx(2.0)  # no jump at the change
    assert clock.beat_at(12.0) == pytest.approx(3.0)  # the new tempo after it
    assert clock.bpm() == 60.0
    with pytest.raises(ValueError, match="tempo"):
        clock.set_bpm(5000.0, 12.0)


def test_next_boundary() -> None:
    # beat 5.5 at t=100 s, 120 BPM (0.5 s a beat): the next bar (4 beats) is beat 8, 1.25 s on
    assert next_boundary_s(5.5, 100.0, 120.0, 4.0) == pytest.approx(101.25)
    assert next_boundary_s(8.0, 100.0, 120.0, 4.0) == pytest.approx(100.0)  # on a boundary
    assert next_boundary_s(7.9999999999, 100.0, 120.0, 4.0) == pytest.approx(100.0)
    assert next_boundary_s(5.5, 100.0, 120.0, 0.0) == 100.0  # no quantisation


# --- estimate_bpm -----------------------------------------------------------------------------


@pytest.mark.parametrize("bpm", [100.0, 128.0, 87.3, 174.0])
def test_estimate_bpm_through_jack_quantisation(bpm: float) -> None:
    rng = np.random.default_rng(int(bpm))
    errors = [abs(estimate_bpm(quantised_ticks(bpm, 96, rng, T0_S + k * 0.37)) - bpm)
              for k in range(50)]
    assert max(errors) < 0.1, errors
    # a single interval is far off (the quantisation is 20% of a tick at 100 BPM): the fit
    # is what makes it good
    times = quantised_ticks(bpm, 96, rng)
    assert max(abs(60 / (TICKS_PER_BEAT * np.diff(times)) - bpm)) > 5


def test_fit_ticks_and_errors() -> None:
    times = T0_S + np.arange(10) * 0.025
    last_s, s_per_tick = fit_ticks(times)
    assert last_s == pytest.approx(times[-1], abs=1e-9)
    assert s_per_tick == pytest.approx(0.025, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        estimate_bpm([1.0])
    with pytest.raises(ValueError, match="do not advance"):
        estimate_bpm([1.0, 1.0, 1.0])


# --- MidiClock ---------------------------------------------------------------------------------


def test_midi_clock_follows_a_tempo_change_within_a_bar() -> None:
    rng = np.random.default_rng(1)
    clock = MidiClock(default_bpm=90.0)
    assert clock.bpm() == 90.0  # no ticks yet
    before = quantised_ticks(100.0, 4 * 96, rng)
    feed(clock, before)
    assert clock.bpm() == pytest.approx(100.0, abs=0.1)
    after = quantised_ticks(128.0, 96, rng, t0_s=before[-1] + 60 / (128 * 24))
    feed(clock, after[:48])
    assert 101 < clock.bpm() < 127  # half a bar in: on its way
    feed(clock, after[48:])
    assert clock.bpm() == pytest.approx(128.0, abs=0.1)  # one bar of 4/4 after the change


def test_midi_clock_start_stop_continue() -> None:
    rng = np.random.default_rng(2)
    clock = MidiClock()
    times = quantised_ticks(120.0, 200, rng)  # 120 BPM: a beat every 0.5 s, a tick ~20.8 ms
    feed(clock, times[:50])  # clock before any start: a tempo, no beat
    assert clock.beat_at(float(times[49])) is None
    clock.start(float(times[49]) + 0.001)
    assert clock.beat_at(float(times[50]) - 0.002) == 0.0  # held until the first tick
    feed(clock, times[50:98])  # the first tick after start is beat 0: 48 ticks → at beat 47/24
    assert clock.beat_at(float(times[97])) == pytest.approx(47 / 24, abs=0.01)
    # between ticks it moves on at the tempo ...
    mid_s = float(times[97]) + 0.25 * 60 / (120 * 24)
    assert clock.beat_at(mid_s) == pytest.approx(47.25 / 24, abs=0.01)
    # ... but never more than a tick past the last tick: a clock gone quiet holds its beat
    assert clock.beat_at(float(times[97]) + 1.0) == pytest.approx(48 / 24, abs=1e-9)
    clock.stop(float(times[97]) + 0.005)
    assert clock.beat_at(float(times[98])) is None
    feed(clock, times[98:150])  # ticks while stopped move nothing
    clock.continue_(float(times[149]) + 0.001)
    feed(clock, times[150:152])  # continue: the next tick is the 49th
    assert clock.beat_at(float(times[151])) == pytest.approx(49 / 24, abs=0.01)
    clock.stop(float(times[151]) + 0.001)
    clock.song_position(16)  # a song position pointer: 16 sixteenths = 4 beats
    clock.continue_(float(times[152]))
    assert clock.beat_at(float(times[152])) == pytest.approx(4.0)
    feed(clock, times[152:153])
    assert clock.beat_at(float(times[152])) == pytest.approx(4.0, abs=0.01)
    clock.start(float(times[152]) + 0.001)  # a start goes back to 0
    feed(clock, times[153:154])
    assert clock.beat_at(float(times[153])) == pytest.approx(0.0, abs=0.01)


def test_midi_clock_silence_restarts_the_fit_and_keeps_the_tempo() -> None:
    rng = np.random.default_rng(3)
    clock = MidiClock()
    first = quantised_ticks(100.0, 96, rng)
    feed(clock, first)
    assert clock.bpm() == pytest.approx(100.0, abs=0.1)
    # the source stops sending for a while and comes back at 140: the gap must not be read as
    # one long tick
    second = quantised_ticks(140.0, 96, rng, t0_s=first[-1] + 5 * MAX_TICK_GAP_S)
    feed(clock, second[:10])
    assert clock.bpm() == pytest.approx(100.0, abs=0.1)  # too few new ticks: the last tempo
    feed(clock, second[10:])
    assert clock.bpm() == pytest.approx(140.0, abs=0.1)


def test_midi_clock_is_thread_safe() -> None:
    """Ticks on one thread, readers on another: no error, and the beat never runs backwards by
    more than the fit can move it (a tick's quantisation)."""
    clock = MidiClock()
    times = quantised_ticks(120.0, 3000, np.random.default_rng(4))
    clock.start(float(times[0]) - 0.001)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        last = -1.0
        try:
            while not done.is_set():
                beat = clock.beat_at(float(times[-1]) + 1)
                clock.bpm()
                assert beat is not None and beat >= last - 0.2 / TICKS_PER_BEAT
                last = beat
        except BaseException as err:  # reported below
            errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    feed(clock, times)
    done.set()
    reader.join()
    assert not errors, errors
    assert clock.beat_at(float(times[-1])) == pytest.approx(2999 / 24, abs=0.01)


def test_midi_clock_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="tempo"):
        MidiClock(default_bpm=0.0)
    with pytest.raises(ValueError, match="window_ticks"):
        MidiClock(window_ticks=3)
