"""The wire protocol between the server (ZeroMQ ROUTER) and its clients (DEALER), version 1.

Imports numpy, msgpack and pydantic only (no torch): the bridge uses it as it is. Every message
is one multipart ZeroMQ message: a msgpack map (the header) and, for audio, a second frame of
raw little-endian float32 PCM (mono). `docs/protocol.md` documents every message and error.

    header = {"v": 1, "type": "generate", "seq": 7, ...fields of the type...}

`seq` counts the sender's messages; a reply to a request carries the request's seq as `re`.
Requests (client → server): hello, generate (PCM frame optional), param, stop, status, presets,
heartbeat. Replies (server → client): hello, accepted, chunk (PCM frame), done, error, status,
presets, heartbeat. Each request type has a pydantic model; `parse_request` turns raw frames
into one or raises `ProtocolError` with an `ErrorCode`, which the server sends back as an
`error` reply.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
PCM_DTYPE = np.dtype("<f4")
MAX_HEADER_BYTES = 64 * 1024
HEARTBEAT_S = 1.0  # each side says something at least this often
PEER_TIMEOUT_S = 5.0  # a side not heard from for this long is gone

REQUEST_TYPES = ("hello", "generate", "param", "stop", "status", "presets", "heartbeat")
REPLY_TYPES = ("hello", "accepted", "chunk", "done", "error", "status", "presets", "heartbeat")
# live parameters and their ranges (their meaning: server/engine/params.py)
PARAM_RANGES = {"temperature": (0.0, 5.0), "top_k": (0.0, 1000.0), "top_p": (0.0, 1.0),
                "variation": (0.0, 1.0)}
PARAM_NAMES = tuple(PARAM_RANGES)


class ErrorCode(StrEnum):
    """The `code` of an error reply."""

    BAD_MESSAGE = "bad_message"  # not msgpack, not a map, wrong number of frames, bad PCM
    BAD_VERSION = "bad_version"  # `v` is not PROTOCOL_VERSION
    UNKNOWN_TYPE = "unknown_type"  # `type` is not a request type
    BAD_FIELD = "bad_field"  # a field is missing, of the wrong type or out of range
    TOO_LARGE = "too_large"  # a frame is larger than the server's limit
    UNKNOWN_PRESET = "unknown_preset"
    BAD_CLIP = "bad_clip"  # clip path outside the clip root, missing, or not usable audio
    LIMIT = "limit"  # too many jobs, too many bars, too long a prompt
    RATE_LIMITED = "rate_limited"  # over the client's requests/s or upload bytes/s: dropped
    UNKNOWN_JOB = "unknown_job"  # param/stop for a job or track the server does not have
    INTERNAL = "internal"  # the server failed; the job ends, the server goes on
    RECORDING = "recording"  # a job's recording cannot be written (disk); the job plays on
    SHUTDOWN = "shutdown"  # the server is stopping


class ProtocolError(Exception):
    """A message the other side cannot act on; `code` and `message` go into the error reply."""

    def __init__(self, code: ErrorCode, message: str, job: str | None = None,
                 seq: int | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code, self.message, self.job, self.seq = code, message, job, seq


# --- requests -----------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: int
    type: str
    seq: int = Field(ge=0)


class Hello(_Request):
    type: Literal["hello"] = "hello"
    client: str = Field("", max_length=200)


Params = dict[Annotated[str, Field(max_length=40)], float]


def _check_params(params: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: "
                         f"{', '.join(PARAM_NAMES)}")
    bad = [k for k, v in params.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"parameter(s) {', '.join(bad)} must be finite")
    return params


class Generate(_Request):
    """Continue a clip: `clip` (a path under the server's clip root) or a PCM frame at `sr`."""

    type: Literal["generate"] = "generate"
    track: str = Field("main", min_length=1, max_length=100)
    clip: str | None = Field(None, max_length=4096)
    sr: int | None = Field(None, ge=1000, le=768_000)
    tempo: float = Field(gt=0, allow_inf_nan=False)
    meter: str = Field("4/4", max_length=10)
    bars: int | None = Field(None, ge=1)
    chunk_beats: float = Field(1.0, gt=0, allow_inf_nan=False)
    preset: str | None = Field(None, max_length=200)
    params: Params = Field(default_factory=dict)
    seed: int | None = Field(None, ge=0, lt=2**63)
    loop: bool = False

    @field_validator("params")
    @classmethod
    def known_params(cls, params: dict[str, float]) -> dict[str, float]:
        return _check_params(params)


class Param(_Request):
    """Change parameters of a running job (by `job`, or the job on `track`) from its next chunk;
    `preset` switches preset (same model folder) likewise."""

    type: Literal["param"] = "param"
    job: str | None = Field(None, max_length=100)
    track: str | None = Field(None, max_length=100)
    params: Params = Field(default_factory=dict)
    preset: str | None = Field(None, max_length=200)

    @field_validator("params")
    @classmethod
    def known_params(cls, params: dict[str, float]) -> dict[str, float]:
        return _check_params(params)


class Stop(_Request):
    """End a job (by `job`, or the job on `track`; neither: all of this client's jobs) now."""

    type: Literal["stop"] = "stop"
    job: str | None = Field(None, max_length=100)
    track: str | None = Field(None, max_length=100)


class Status(_Request):
    type: Literal["status"] = "status"


class Presets(_Request):
    type: Literal["presets"] = "presets"


class Heartbeat(_Request):
    type: Literal["heartbeat"] = "heartbeat"


Request = Hello | Generate | Param | Stop | Status | Presets | Heartbeat
_REQUESTS: dict[str, type[_Request]] = {
    "hello": Hello, "generate": Generate, "param": Param, "stop": Stop, "status": Status,
    "presets": Presets, "heartbeat": Heartbeat,
}


@dataclass(frozen=True)
class Incoming:
    """A parsed request and its PCM frame (mono float32 [T]), if it had one."""

    request: Any  # one of Request
    pcm: np.ndarray | None = None


# --- frames -------------------------------------------------------------------------------------


def pack(header: dict[str, Any], pcm: np.ndarray | None = None) -> list[bytes]:
    """header (+ mono PCM [T]) → the frames of one message."""
    frames = [msgpack.packb(header, use_bin_type=True)]
    if pcm is not None:
        frames.append(np.ascontiguousarray(pcm, dtype=PCM_DTYPE).tobytes())
    return frames


def unpack_header(frame: bytes) -> dict[str, Any]:
    """A header frame → its map; ProtocolError(BAD_MESSAGE) when it is not a msgpack map."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"header of {len(frame)} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as err:  # msgpack raises several types for garbage
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"header is not msgpack ({type(err).__name__}: {err})") from err
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"header must be a msgpack map, got {type(header).__name__}")
    return header


def unpack_pcm(frame: bytes, max_bytes: int) -> np.ndarray:
    """A PCM frame → float32 [T]; TOO_LARGE over max_bytes, BAD_MESSAGE when not whole samples
    or not finite."""
    if len(frame) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"PCM frame of {len(frame)} bytes (at most {max_bytes})")
    if len(frame) % PCM_DTYPE.itemsize:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"PCM frame of {len(frame)} bytes is not "
                            "whole float32 samples")
    pcm = np.frombuffer(frame, dtype=PCM_DTYPE).astype(np.float32)
    if not np.all(np.isfinite(pcm)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "PCM frame holds NaN or infinite samples")
    return pcm


def parse_request(frames: list[bytes], max_pcm_bytes: int) -> Incoming:
    """The frames of one request (without the ROUTER's identity) → Incoming; ProtocolError
    naming what is wrong otherwise (with the request's seq and job when they could be read)."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message has 1 or 2 frames, got 0")
    header = unpack_header(frames[0])
    seq = header.get("seq") if type(header.get("seq")) is int else None  # not a bool
    job = header.get("job") if isinstance(header.get("job"), str) else None
    if len(frames) > 2:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"a message has 1 or 2 frames, got "
                            f"{len(frames)}", job, seq)
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {header.get('v')!r}; "
                            f"this server speaks {PROTOCOL_VERSION}", job, seq)
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in _REQUESTS:  # a list or map is not hashable
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown request type {kind!r}; known: "
                            f"{', '.join(REQUEST_TYPES)}", job, seq)
    try:
        request = _REQUESTS[kind].model_validate(header)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}"
                             for e in err.errors())
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{kind}: {problems}", job, seq) from err
    pcm = None
    if len(frames) == 2:
        if kind != "generate":
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{kind} takes no PCM frame", job, seq)
        try:
            pcm = unpack_pcm(frames[1], max_pcm_bytes)
        except ProtocolError as err:
            raise ProtocolError(err.code, err.message, job, seq) from err
    if kind == "generate":
        _check_generate(request, pcm, seq)
    return Incoming(request, pcm)


def _check_generate(request: Generate, pcm: np.ndarray | None, seq: int | None) -> None:
    if (request.clip is None) == (pcm is None):
        raise ProtocolError(ErrorCode.BAD_FIELD, "generate needs exactly one prompt: a clip "
                            "path or a PCM frame", seq=seq)
    if pcm is not None and request.sr is None:
        raise ProtocolError(ErrorCode.BAD_FIELD, "generate with a PCM frame needs its sr",
                            seq=seq)
    if request.bars is None and not request.loop:
        raise ProtocolError(ErrorCode.BAD_FIELD, "generate needs bars (or loop: true)", seq=seq)


# --- building messages --------------------------------------------------------------------------


@dataclass
class Sequencer:
    """Numbers one side's messages and stamps version and type on them (thread-safe: the
    server's threads share one)."""

    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def header(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self.seq += 1
            seq = self.seq
        return {"v": PROTOCOL_VERSION, "type": kind, "seq": seq, **self.extra, **fields}


def error_header(seq: Sequencer, code: ErrorCode, message: str, job: str | None = None,
                 re: int | None = None) -> dict[str, Any]:
    return seq.header("error", code=code.value, message=message, job=job, re=re)
