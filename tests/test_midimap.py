"""The MIDI controller map (pure): TOML load/save, validation errors, curves, learn, and the
command each message maps to."""

from __future__ import annotations

import itertools
from pathlib import Path

import mido
import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuo.bridge import osc
from continuo.bridge.midimap import (
    CcMapping,
    MidiMap,
    NoteMapping,
    cc_value,
    command_for,
    learn,
    load_map,
    save_map,
)
from continuo.server.errors import ConfigError
from continuo.server.transport.protocol import PARAM_RANGES

EXAMPLE = Path(__file__).resolve().parents[1] / "bridge" / "midi_map.example.toml"

MAP_TOML = """
[cc.74]
param = "temperature"
low = 0.5
high = 1.5
curve = "exp"
channel = 2

[cc.1]
param = "top_p"

[notes.36]
action = "generate"
clip = "loops/a.wav"
bars = 8
preset = "piano"

[notes.37]
action = "capture"
bars = 4
source = "take.wav"

[notes.38]
action = "stop"

[notes.39]
action = "loop"

[notes.40]
action = "preset"
preset = "realtime"
channel = 10

[notes.41]
action = "learn"
param = "top_k"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_save_round_trip(tmp_path: Path) -> None:
    midi_map = load_map(write(tmp_path, MAP_TOML))
    assert midi_map.cc[74] == CcMapping(param="temperature", low=0.5, high=1.5, curve="exp",
                                        channel=2)
    assert midi_map.cc[1].range == PARAM_RANGES["top_p"]
    assert midi_map.notes[37] == NoteMapping(action="capture", bars=4, source="take.wav")
    saved = tmp_path / "sub" / "saved.toml"
    save_map(midi_map, saved)
    assert load_map(saved) == midi_map
    assert [p.name for p in saved.parent.iterdir()] == ["saved.toml"]  # no temporary left


def test_missing_file_is_an_empty_map(tmp_path: Path) -> None:
    assert load_map(tmp_path / "none.toml") == MidiMap()
    assert load_map(None) == MidiMap()  # no --midi-map


def test_example_map_loads() -> None:
    midi_map = load_map(EXAMPLE)
    assert midi_map.cc and midi_map.notes
    assert {n.action for n in midi_map.notes.values()} == {"generate", "capture", "stop",
                                                           "loop", "preset", "learn"}
    assert {m.curve for m in midi_map.cc.values()} == {"linear", "exp", "log"}


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[cc.74]\nparam = "warmth"', "cc.74.param", "unknown param 'warmth'"),
    ('[notes.1]\naction = "learn"', "notes.1", "action 'learn' needs param"),
    ('[notes.1]\naction = "learn"\nparam = "x"', "notes.1.param", "unknown param 'x'"),
    ('[cc.74]\nparam = "top_p"\nhigh = 2.0', "cc.74", "high = 2 is outside top_p's range"),
    ('[cc.74]\nparam = "top_p"\ncurve = "cubic"', "cc.74.curve", "'linear', 'exp' or 'log'"),
    ('[cc.74]\nparam = "top_p"\nchannel = 17', "cc.74.channel", "less than or equal to 16"),
    ('[cc.74]\nparam = "top_p"\nlow = "0"', "cc.74.low", "valid number"),
    ('[cc.74]\nparam = "top_p"\nhgih = 1.0', "cc.74.hgih", "Extra inputs"),
    ('[cc.128]\nparam = "top_p"', "cc.128", "less than or equal to 127"),
    ('[cc.knob]\nparam = "top_p"', "cc.knob", "valid integer"),
    ('[notes.36]\naction = "generate"\nbars = 8', "notes.36", "needs clip"),
    ('[notes.36]\naction = "stop"\nclip = "a.wav"', "notes.36", "clip not used by action"),
    ('[notes.36]\naction = "capture"\nbars = 65', "notes.36", "at most 64"),
    ('[notes.36]\naction = "jump"', "notes.36.action", "'generate', 'capture'"),
    ('[notes.36]\naction = "generate"\nclip = "a"\nbars = 0', "notes.36.bars", "greater than"),
    ("[pads.36]", "pads", "Extra inputs"),
])
def test_errors_name_file_key_and_problem(tmp_path: Path, text: str, key: str,
                                          problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_map(path)
    message = str(err.value)
    assert str(path) in message and f"{key}:" in message and problem in message, message


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[cc.74\nparam = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_map(path)


@pytest.mark.parametrize("curve", ["linear", "exp", "log"])
def test_curves_hit_the_ends_and_rise(curve: str) -> None:
    mapping = CcMapping(param="top_k", low=3.0, high=700.0, curve=curve)
    values = [cc_value(mapping, v) for v in range(128)]
    assert values[0] == 3.0 and values[127] == 700.0
    assert all(a < b for a, b in itertools.pairwise(values))
    middle = values[64]
    expected = {"linear": (300, 400), "exp": (10, 100), "log": (570, 620)}[curve]
    assert expected[0] < middle < expected[1]  # exp: fine at the bottom; log: at the top
    with pytest.raises(ValueError, match=r"0\.\.127"):
        cc_value(mapping, 128)


@given(low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0),
       curve=st.sampled_from(["linear", "exp", "log"]))
def test_curves_exact_ends_and_monotonic_for_any_range(low: float, high: float,
                                                       curve: str) -> None:
    mapping = CcMapping(param="variation", low=low, high=high, curve=curve)
    values = [cc_value(mapping, v) for v in range(128)]
    assert values[0] == low and values[127] == high
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert all(s >= 0 for s in steps) if high >= low else all(s <= 0 for s in steps)
    assert all(min(low, high) <= v <= max(low, high) for v in values)


def test_learn_replaces_older_bindings() -> None:
    midi_map = load_map(EXAMPLE)
    old_temperature_cc = next(n for n, m in midi_map.cc.items() if m.param == "temperature")
    learned = learn(midi_map, "temperature", 20, channel=3)
    assert learned.cc[20] == CcMapping(param="temperature", low=0.0, high=5.0, channel=3)
    assert old_temperature_cc not in learned.cc  # one knob per parameter
    assert midi_map.cc[old_temperature_cc].param == "temperature"  # the old map is unchanged
    # binding a CC that already has a parameter replaces that binding
    relearned = learn(learned, "top_p", 20, channel=None)
    assert relearned.cc[20].param == "top_p" and relearned.cc[20].range == (0.0, 1.0)
    assert [m.param for m in relearned.cc.values()].count("top_p") == 1
    assert "temperature" not in {m.param for m in relearned.cc.values()}
    assert relearned.notes == midi_map.notes
    with pytest.raises(ConfigError, match="unknown param 'warmth'"):
        learn(midi_map, "warmth", 20, None)
    with pytest.raises(ConfigError, match="CC number"):
        learn(midi_map, "top_p", 128, None)


def test_learned_map_survives_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    save_map(learn(load_map(path), "variation", 21, channel=None), path)
    assert load_map(path).cc[21].param == "variation"


def test_command_for_each_mapping(tmp_path: Path) -> None:
    midi_map = load_map(write(tmp_path, MAP_TOML))

    def command(**fields: object) -> osc.Command | None:
        return command_for(mido.Message(**fields), midi_map, tempo_bpm=93.5)

    assert command(type="control_change", control=74, value=127, channel=1) == osc.Param(
        "temperature", 1.5)
    assert command(type="control_change", control=74, value=0, channel=1) == osc.Param(
        "temperature", 0.5)
    assert command(type="control_change", control=74, value=64, channel=0) is None  # channel 1
    assert command(type="control_change", control=1, value=127, channel=15) == osc.Param(
        "top_p", 1.0)
    assert command(type="control_change", control=2, value=3) is None  # unmapped
    assert command(type="note_on", note=36, velocity=100) == osc.Generate(
        "loops/a.wav", 93.5, 8, "piano")
    assert command(type="note_on", note=37, velocity=1) == osc.Capture(4, "take.wav")
    assert command(type="note_on", note=38, velocity=1) == osc.Stop()
    assert command(type="note_on", note=39, velocity=1) == osc.Loop(True)
    assert command(type="note_on", note=40, velocity=1, channel=9) == osc.Preset("realtime")
    assert command(type="note_on", note=40, velocity=1, channel=0) is None
    assert command(type="note_on", note=41, velocity=1) == osc.Learn("top_k")
    assert command(type="note_on", note=36, velocity=0) is None  # a note-off in disguise
    assert command(type="note_off", note=36) is None
    assert command(type="note_on", note=50, velocity=100) is None
    assert command(type="pitchwheel", pitch=100) is None
