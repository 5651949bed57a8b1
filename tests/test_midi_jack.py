"""MIDI over a real JACK server (dummy driver): the bridge's virtual input port gets CCs and
notes from a mido/rtmidi output connected to it, and MIDI clock sets the MidiClock's tempo and
beat. rtmidi reads $JACK_DEFAULT_SERVER when it opens a client, so it is set in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import mido
import pytest
from midi_fixtures import BACKEND, send_clock

from continuo.bridge.clock import TICKS_PER_BEAT, WINDOW_TICKS, MidiClock, estimate_bpm
from continuo.bridge.midi import MidiError, MidiInput


@pytest.fixture
def midi(jack_midi: str) -> Iterator[tuple[MidiInput, MidiClock, mido.ports.BaseOutput]]:
    """The bridge's port (with a MidiClock) and a mido output connected to it over JACK."""
    clock = MidiClock(default_bpm=60.0)
    midi_in = MidiInput(api="jack", port_name="Continuo", clock=clock)
    backend = mido.Backend(BACKEND, load=True)
    names = backend.get_output_names()
    assert "Continuo:Continuo" in names, names
    out = backend.open_output("Continuo:Continuo")
    try:
        yield midi_in, clock, out
    finally:
        out.close()
        midi_in.close()


def received(midi_in: MidiInput, n: int) -> list[tuple[mido.Message, float]]:
    return [midi_in.messages.get(timeout=2.0) for _ in range(n)]


def test_cc_and_note_are_queued_with_their_time(midi) -> None:
    midi_in, _, out = midi
    assert midi_in.api == "jack"
    sent_s = time.perf_counter()
    out.send(mido.Message("clock"))  # goes to the clock, not the queue
    out.send(mido.Message("control_change", channel=1, control=74, value=100))
    out.send(mido.Message("note_on", channel=9, note=36, velocity=90))
    (cc, cc_s), (note, note_s) = received(midi_in, 2)
    assert cc.bytes() == [0xB1, 74, 100] and note.bytes() == [0x99, 36, 90]
    assert sent_s - 0.01 < cc_s <= note_s < time.perf_counter()
    assert midi_in.messages.empty() and midi_in.dropped == 0 and midi_in.unparsed == 0


def test_a_full_queue_drops_and_counts(jack_midi: str) -> None:
    with MidiInput(api="jack", port_name="Continuo small", queue_size=2) as midi_in:
        with mido.Backend(BACKEND, load=True).open_output("Continuo small:Continuo small") as out:
            for value in range(5):
                out.send(mido.Message("control_change", control=1, value=value))
            deadline_s = time.perf_counter() + 2.0
            while midi_in.dropped < 3 and time.perf_counter() < deadline_s:
                time.sleep(0.01)
        assert [m.value for m, _ in received(midi_in, 2)] == [0, 1]  # the oldest are kept
        assert midi_in.dropped == 3


def test_midi_clock_tempo_and_tempo_change(midi) -> None:
    """The tempo is checked against the nominal one and against the one the ticks actually went
    out at (the same least-squares fit over the sender's own clock): on a loaded machine the
    sender itself wanders by a tenth of a BPM or more, and the bridge should follow it."""
    midi_in, clock, out = midi
    sent_s: list[float] = []
    out.send(mido.Message("start"))
    first_s = time.perf_counter() + 0.02
    n_ticks = 160  # 4 s at 100 BPM
    next_s = send_clock(out, 100.0, n_ticks, first_s, sent_s)
    time.sleep(0.003)
    bpm_100, sent_100 = clock.bpm(), estimate_bpm(sent_s[-WINDOW_TICKS:])
    # the beat: the first tick after the start is beat 0; the clock's beat lags the sender's by
    # JACK's delivery (a period or two, 5-11 ms, under 0.02 beat at 100 BPM)
    now_s = time.perf_counter()
    sender_beat = (n_ticks - 1) / TICKS_PER_BEAT + (now_s - sent_s[-1]) * 100 / 60
    beat = clock.beat_at(now_s)
    # 100 → 128 BPM, then two bars of 4/4 at 128
    send_clock(out, 128.0, 2 * 4 * TICKS_PER_BEAT, next_s, sent_s)
    time.sleep(0.003)
    bpm_128, sent_128 = clock.bpm(), estimate_bpm(sent_s[-WINDOW_TICKS:])
    assert bpm_100 == pytest.approx(sent_100, abs=0.1)
    assert bpm_128 == pytest.approx(sent_128, abs=0.1)
    assert bpm_100 == pytest.approx(100.0, abs=0.1 + abs(sent_100 - 100))
    assert bpm_128 == pytest.approx(128.0, abs=0.1 + abs(sent_128 - 128))
    assert beat == pytest.approx(sender_beat, abs=0.05)
    assert midi_in.messages.empty()  # clock messages are not queued


def test_start_stop_continue_and_song_position_reach_the_clock(midi) -> None:
    midi_in, clock, out = midi
    assert clock.beat_at(time.perf_counter()) is None  # never started

    def wait_for(condition, what: str) -> None:
        deadline_s = time.perf_counter() + 2.0
        while not condition():
            assert time.perf_counter() < deadline_s, what
            time.sleep(0.005)

    out.send(mido.Message("start"))
    wait_for(lambda: clock.beat_at(time.perf_counter()) is not None, "start")
    next_s = send_clock(out, 120.0, 48, time.perf_counter())  # two beats
    wait_for(lambda: abs(clock.beat_at(time.perf_counter()) - 47 / 24) < 0.05, "ticks")
    out.send(mido.Message("stop"))
    wait_for(lambda: clock.beat_at(time.perf_counter()) is None, "stop")
    next_s = send_clock(out, 120.0, 24, next_s)  # ticks while stopped move nothing
    out.send(mido.Message("continue"))
    wait_for(lambda: clock.beat_at(time.perf_counter()) is not None, "continue")
    assert clock.beat_at(time.perf_counter()) == pytest.approx(48 / 24)
    next_s = send_clock(out, 120.0, 1, next_s)
    wait_for(lambda: abs(clock.beat_at(time.perf_counter()) - 48 / 24) < 0.05, "resumed")
    out.send(mido.Message("stop"))
    out.send(mido.Message("songpos", pos=32))  # 32 sixteenths: beat 8
    out.send(mido.Message("continue"))
    wait_for(lambda: clock.beat_at(time.perf_counter()) == 8.0, "song position")
    assert midi_in.messages.empty()


def test_no_jack_server_is_a_clear_error(jack_midi: str, monkeypatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "continuo-no-such-server")
    with pytest.raises(MidiError, match=r"'Continuo'.*jack: .*JACK server not running"):
        MidiInput(api="jack")
    with pytest.raises(MidiError, match="unknown MIDI API 'coremidi'; known: jack, alsa, auto"):
        MidiInput(api="coremidi")
