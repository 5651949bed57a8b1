"""The MIDI controller map: CCs to live parameters, notes (pads) to actions (pure, no ports).

A TOML file (`bridge/midi_map.example.toml` documents every key):

    [cc.74]               # CC number 0..127
    param = "temperature" # temperature | top_k | top_p | variation
    low = 0.5             # the value at CC 0 (default: the bottom of the parameter's range)
    high = 1.5            # the value at CC 127 (default: the top); low > high turns the knob round
    curve = "linear"      # linear | exp (fine control at the low end) | log (at the high end)
    channel = 1           # 1..16; absent: any channel

    [notes.36]            # note number 0..127; a note-on with velocity > 0 fires it
    action = "generate"   # generate | capture | stop | loop | preset | learn
    clip = "loops/a.wav"  # generate: the clip (a path under the server's clip root)
    bars = 8              # generate, capture: how many bars
    preset = "piano"      # preset: the preset to switch to; generate: optional
    source = "take.wav"   # capture: optional file the DAW is writing (default: audio input)
    channel = 10          # 1..16; absent: any channel

A key an action does not use is an error (a typo should not pass silently). `load_map` raises
ConfigError naming the file, the key and the problem; `save_map` writes atomically (MIDI learn
saves the map it changed; comments are not kept). `command_for` turns a mido message into the
bridge's command (the same `osc.Command` an OSC message gives).
"""

from __future__ import annotations

import math
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import mido
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from continuo.bridge import osc
from continuo.server.errors import ConfigError
from continuo.server.transport.protocol import PARAM_NAMES, PARAM_RANGES

CURVE_RATIO = 100.0  # exp/log: the curve's slope at one end is 100 times the one at the other
MIDI_MAX = 127
Number = Annotated[int, Field(ge=0, le=MIDI_MAX)]
Channel = Annotated[int, Field(ge=1, le=16)]
ACTION_KEYS = {"generate": {"clip", "bars", "preset"}, "capture": {"bars", "source"},
               "stop": set(), "loop": set(), "preset": {"preset"}, "learn": {"param"}}
REQUIRED_KEYS = {"generate": {"clip", "bars"}, "capture": {"bars"}, "preset": {"preset"},
                 "learn": {"param"}}
FILE_HEADER = ("# Continuo MIDI map (continuo-bridge rewrites this file after a MIDI learn; "
               "keys: bridge/midi_map.example.toml)\n\n")


class CcMapping(BaseModel):
    """A CC bound to a live parameter: CC 0 → low, CC 127 → high, along `curve`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    param: str
    low: float | None = Field(None, allow_inf_nan=False)  # None: PARAM_RANGES[param][0]
    high: float | None = Field(None, allow_inf_nan=False)  # None: PARAM_RANGES[param][1]
    curve: Literal["linear", "exp", "log"] = "linear"
    channel: Channel | None = None

    @field_validator("param")
    @classmethod
    def _known(cls, param: str) -> str:
        if param not in PARAM_NAMES:
            raise ValueError(f"unknown param {param!r}; known: {', '.join(PARAM_NAMES)}")
        return param

    @model_validator(mode="after")
    def _in_range(self) -> CcMapping:
        bottom, top = PARAM_RANGES[self.param]
        for key, value in (("low", self.low), ("high", self.high)):
            if value is not None and not bottom <= value <= top:
                raise ValueError(f"{key} = {value:g} is outside {self.param}'s range "
                                 f"{bottom:g}..{top:g}")
        return self

    @property
    def range(self) -> tuple[float, float]:
        """(value at CC 0, value at CC 127), the parameter's range filling in what is absent."""
        bottom, top = PARAM_RANGES[self.param]
        return (bottom if self.low is None else self.low, top if self.high is None else self.high)


class NoteMapping(BaseModel):
    """A note (pad) bound to an action."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["generate", "capture", "stop", "loop", "preset", "learn"]
    clip: str | None = Field(None, min_length=1, max_length=osc.MAX_TEXT)
    bars: int | None = Field(None, ge=1, le=osc.MAX_BARS)
    preset: str | None = Field(None, min_length=1, max_length=osc.MAX_TEXT)
    source: str | None = Field(None, min_length=1, max_length=osc.MAX_TEXT)
    param: str | None = None  # learn: the parameter the next knob moved will control
    channel: Channel | None = None

    @field_validator("param")
    @classmethod
    def _known(cls, param: str | None) -> str | None:
        if param is not None and param not in PARAM_NAMES:
            raise ValueError(f"unknown param {param!r}; known: {', '.join(PARAM_NAMES)}")
        return param

    @model_validator(mode="after")
    def _keys_fit_action(self) -> NoteMapping:
        given = {k for k in ("clip", "bars", "preset", "source", "param")
                 if getattr(self, k) is not None}
        extra = sorted(given - ACTION_KEYS[self.action])
        if extra:
            raise ValueError(f"{', '.join(extra)} not used by action {self.action!r}")
        missing = sorted(REQUIRED_KEYS.get(self.action, set()) - given)
        if missing:
            raise ValueError(f"action {self.action!r} needs {', '.join(missing)}")
        if self.action == "capture" and self.bars is not None and self.bars > osc.MAX_CAPTURE_BARS:
            raise ValueError(f"capture bars must be at most {osc.MAX_CAPTURE_BARS}")
        return self


class MidiMap(BaseModel):
    """CC number → CcMapping, note number → NoteMapping (TOML tables `[cc.N]`, `[notes.N]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cc: dict[Number, CcMapping] = Field(default_factory=dict)
    notes: dict[Number, NoteMapping] = Field(default_factory=dict)

    @field_validator("cc", "notes", mode="before")
    @classmethod
    def _number_keys(cls, table: Any) -> Any:
        """TOML table keys are strings: "74" → 74 (anything else is left for the error)."""
        if not isinstance(table, dict):
            return table
        return {int(k) if isinstance(k, str) and k.isdecimal() else k: v for k, v in table.items()}


def map_from_dict(data: dict[str, Any], where: str) -> MidiMap:
    """A MidiMap from TOML-like data; ConfigError naming `where` and every bad key."""
    try:
        return MidiMap(**data)
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        raise ConfigError(f"{where}: invalid MIDI map ({problems})") from err
    except TypeError as err:  # a key that is not a string cannot be a keyword
        raise ConfigError(f"{where}: invalid MIDI map ({err})") from err


def _problem(error: Any) -> str:
    """One pydantic error as `key: problem`, the key as in TOML: ("cc", 74, "low") → cc.74.low."""
    key = ".".join(str(p) for p in error["loc"] if p != "[key]") or "(top level)"
    return f"{key}: {error['msg'].removeprefix('Value error, ')}"


def load_map(path: str | Path | None) -> MidiMap:
    """The map in a TOML file; no path or a missing file is an empty map, a broken one a
    ConfigError."""
    if path is None:
        return MidiMap()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return MidiMap()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the MIDI map ({err})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    return map_from_dict(data, str(path))


def save_map(midi_map: MidiMap, path: str | Path) -> None:
    """Write the map as TOML, atomically: a temporary file beside it, then os.replace."""
    path = Path(path)
    data = {table: {str(n): m.model_dump(exclude_none=True) for n, m in sorted(entries.items())}
            for table, entries in (("cc", midi_map.cc), ("notes", midi_map.notes))}
    text = FILE_HEADER + tomli_w.dumps({k: v for k, v in data.items() if v})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def curve_shape(curve: str, x: float) -> float:
    """The knob's curve on [0, 1] → [0, 1], increasing, 0 → 0 and 1 → 1 exactly.

        linear: x
        exp:    (R^x - 1) / (R - 1)       slow at first: fine control of small values
        log:    log(1 + (R - 1) x) / log R  the inverse of exp: fine control of large values

    with R = CURVE_RATIO (100): exp at half-turn is 0.09, log 0.85.
    """
    if curve == "exp":
        return (CURVE_RATIO ** x - 1.0) / (CURVE_RATIO - 1.0)
    if curve == "log":
        return math.log1p((CURVE_RATIO - 1.0) * x) / math.log(CURVE_RATIO)
    return x


def cc_value(mapping: CcMapping, value: int) -> float:
    """The parameter value of a CC value 0..127: low at 0 and high at 127 exactly, monotonic."""
    if not 0 <= value <= MIDI_MAX:
        raise ValueError(f"a CC value is 0..{MIDI_MAX}, got {value}")
    low, high = mapping.range
    if value == MIDI_MAX:
        return high
    return low + (high - low) * curve_shape(mapping.curve, value / MIDI_MAX)


def learn(midi_map: MidiMap, param: str, cc: int, channel: int | None) -> MidiMap:
    """A new map with `cc` bound to `param` over its whole range (PARAM_RANGES), linear, on
    `channel` (1..16, None: any; a mido message's channel is 0..15: add 1), replacing any older
    binding of that CC and any older CC bound to that parameter."""
    if not 0 <= cc <= MIDI_MAX:
        raise ConfigError(f"MIDI learn: CC number must be 0..{MIDI_MAX}, got {cc}")
    bottom, top = PARAM_RANGES.get(param, (None, None))
    try:
        mapping = CcMapping(param=param, low=bottom, high=top, channel=channel)
    except ValidationError as err:
        raise ConfigError(f"MIDI learn of CC {cc} for {param!r}: "
                          + "; ".join(_problem(e) for e in err.errors())) from err
    kept = {n: m for n, m in midi_map.cc.items() if n != cc and m.param != param}
    return midi_map.model_copy(update={"cc": {**kept, cc: mapping}})


def command_for(message: mido.Message, midi_map: MidiMap, tempo_bpm: float) -> osc.Command | None:
    """The command a MIDI message maps to (a CC → Param, a pad's note-on → its action, with
    tempo_bpm for a generate), or None when nothing is mapped to it. A loop pad returns
    Loop(True): toggling is the bridge's business."""
    if message.type == "control_change":
        cc = midi_map.cc.get(message.control)
        if cc is None or not _on_channel(cc.channel, message):
            return None
        return osc.Param(cc.param, cc_value(cc, message.value))
    if message.type != "note_on" or message.velocity == 0:
        return None
    pad = midi_map.notes.get(message.note)
    if pad is None or not _on_channel(pad.channel, message):
        return None
    if pad.action == "generate":
        return osc.Generate(pad.clip, float(tempo_bpm), pad.bars, pad.preset)
    if pad.action == "capture":
        return osc.Capture(pad.bars, pad.source)
    if pad.action == "preset":
        return osc.Preset(pad.preset)
    if pad.action == "learn":
        return osc.Learn(pad.param)
    return osc.Loop(True) if pad.action == "loop" else osc.Stop()


def _on_channel(channel: int | None, message: mido.Message) -> bool:
    return channel is None or channel == message.channel + 1
