"""The bridge's OSC address space: every /continuo/... message parsed and checked (pure).

    /continuo/generate  s:clip f:tempo i:bars [s:preset]   continue a clip (path under the
                                                            server's clip root) by bars
    /continuo/stop                                          end the running job now
    /continuo/param     s:name f:value                      temperature, top_k, top_p, variation
    /continuo/preset    s:name                              preset of the running job
    /continuo/tempo     f:bpm                               tempo of the next generate
    /continuo/loop      i:on                                loop mode (1) for the next generate
    /continuo/learn     s:name                              MIDI learn: the next CC moved
                                                            controls this parameter
    /continuo/capture   i:bars [s:source]                   live loop: the last bars of the
                                                            input (or of a WAV file the DAW is
                                                            writing) continued in loop mode
    /continuo/status                                        ask for /continuo/status

Replies, to the sender (or the `--reply` address):

    /continuo/chunk    s:wav_path i:bar f:beat i:index      a chunk arrived (file for import)
    /continuo/playing  s:job f:trigger_to_sound_s f:beat    its first sample reached the device
    /continuo/played   s:job i:chunks i:late_samples f:max_start_error_ms i:timed i:underflows
    /continuo/done     s:job s:reason s:recording           the server ended it
    /continuo/param    s:name f:value i:from_chunk          a live parameter took (-1: next job)
    /continuo/learned  s:name i:cc                          MIDI learn bound a knob
    /continuo/status   s:state s:job f:tempo i:loop         connected / reconnecting / no-audio
    /continuo/error    s:message

Numbers may come as OSC ints or floats (Max and Pd send either);
anything else, a wrong count or a value out of range is an `OscError` naming the address, the
argument and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from continuo.server.errors import ContinuoError
from continuo.server.musical_time import MAX_BPM, MIN_BPM
from continuo.server.transport.protocol import PARAM_NAMES

PREFIX = "/continuo/"
MAX_BARS = 10_000  # the server's default limit (it checks its own)
MAX_TEXT = 4096
MAX_CAPTURE_BARS = 64


class OscError(ContinuoError):
    """An OSC message the bridge cannot act on; its text goes back as /continuo/error."""


@dataclass(frozen=True)
class Generate:
    clip: str
    tempo: float
    bars: int
    preset: str | None = None


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Param:
    name: str
    value: float


@dataclass(frozen=True)
class Preset:
    name: str


@dataclass(frozen=True)
class Tempo:
    bpm: float


@dataclass(frozen=True)
class Loop:
    on: bool


@dataclass(frozen=True)
class Learn:
    name: str


@dataclass(frozen=True)
class Capture:
    bars: int
    source: str | None = None  # None: the audio input device


@dataclass(frozen=True)
class Status:
    pass


Command = Generate | Stop | Param | Preset | Tempo | Loop | Learn | Capture | Status
# address → (argument names, how many are optional at the end)
SIGNATURES: dict[str, tuple[tuple[str, ...], int]] = {
    "generate": (("clip", "tempo", "bars", "preset"), 1),
    "stop": ((), 0),
    "param": (("name", "value"), 0),
    "preset": (("name",), 0),
    "tempo": (("bpm",), 0),
    "loop": (("on",), 0),
    "learn": (("name",), 0),
    "capture": (("bars", "source"), 1),
    "status": ((), 0),
}


def parse_message(address: str, args: list[Any]) -> Command:
    """An OSC address and its arguments → the command; OscError naming what is wrong."""
    name = address[len(PREFIX):] if address.startswith(PREFIX) else None
    if name not in SIGNATURES:
        raise OscError(f"unknown address {address!r}; known: "
                       + ", ".join(PREFIX + a for a in SIGNATURES))
    names, optional = SIGNATURES[name]
    if not len(names) - optional <= len(args) <= len(names):
        want = f"{len(names) - optional}–{len(names)}" if optional else str(len(names))
        raise OscError(f"{address} takes {want} arguments ({' '.join(names) or 'none'}), got "
                       f"{len(args)}")
    a = dict(zip(names, args, strict=False))
    if name == "generate":
        return Generate(_text(address, "clip", a["clip"]),
                        _number(address, "tempo", a["tempo"], MIN_BPM, MAX_BPM),
                        int(_number(address, "bars", a["bars"], 1, MAX_BARS, whole=True)),
                        _text(address, "preset", a["preset"]) if "preset" in a else None)
    if name in ("param", "learn"):
        param = _text(address, "name", a["name"])
        if param not in PARAM_NAMES:
            raise OscError(f"{address}: unknown parameter {param!r}; known: "
                           f"{', '.join(PARAM_NAMES)}")
        if name == "learn":
            return Learn(param)
        return Param(param, _number(address, "value", a["value"], -1e9, 1e9))
    if name == "capture":
        return Capture(int(_number(address, "bars", a["bars"], 1, MAX_CAPTURE_BARS, whole=True)),
                       _text(address, "source", a["source"]) if "source" in a else None)
    if name == "preset":
        return Preset(_text(address, "name", a["name"]))
    if name == "tempo":
        return Tempo(_number(address, "bpm", a["bpm"], MIN_BPM, MAX_BPM))
    if name == "loop":
        return Loop(bool(_number(address, "on", a["on"], 0, 1, whole=True)))
    return Stop() if name == "stop" else Status()


def _text(address: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise OscError(f"{address}: {name} must be a non-empty string of at most {MAX_TEXT} "
                       f"characters, got {_show(value)}")
    return value


def _number(address: str, name: str, value: Any, low: float, high: float,
            whole: bool = False) -> float:
    if isinstance(value, bool) and whole:  # OSC T/F for an on/off switch
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OscError(f"{address}: {name} must be a number, got {_show(value)}")
    if not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise OscError(f"{address}: {name} must be {kind} in {low:g}..{high:g}, got {value:g}")
    return float(value)


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return f"a blob of {len(value)} bytes"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"
