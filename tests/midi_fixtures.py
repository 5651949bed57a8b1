"""MIDI over the private JACK server: the fixture that makes it this process's rtmidi default,
and a MIDI clock sender paced by the monotonic clock."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import mido
import pytest

from continuo.bridge.clock import TICKS_PER_BEAT

BACKEND = "mido.backends.rtmidi/UNIX_JACK"
SPIN_S = 0.002


@pytest.fixture(scope="module")
def jack_midi(jack_server: str) -> Iterator[str]:
    """The private JACK server made the default for this process's rtmidi clients."""
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=jack_server, JACK_NO_START_SERVER="1")
    yield jack_server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def send_clock(out: mido.ports.BaseOutput, bpm: float, n_ticks: int, first_s: float,
               sent_s: list[float] | None = None) -> float:
    """n_ticks MIDI clock ticks at bpm, the first at first_s, each at its own target time (no
    drift): a sleep to just before it, then a short spin (a loaded machine wakes sleepers
    late). Appends the times they went out to sent_s; → the time the next tick is due."""
    interval_s = 60.0 / (bpm * TICKS_PER_BEAT)
    tick = mido.Message("clock")
    for k in range(n_ticks):
        target_s = first_s + k * interval_s
        delay_s = target_s - SPIN_S - time.perf_counter()
        if delay_s > 0:
            time.sleep(delay_s)
        while time.perf_counter() < target_s:
            pass
        if sent_s is not None:
            sent_s.append(time.perf_counter())
        out.send(tick)
    return first_s + n_ticks * interval_s
