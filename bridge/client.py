"""A synchronous client of the Continuo server (ZeroMQ DEALER, protocol v1; no torch).

    with Client("tcp://127.0.0.1:5555") as client:
        client.hello()
        job = client.generate(clip="bach/prelude.wav", tempo=96, bars=8)["job"]
        for event in client.stream(job):      # chunks in order, then the job's `done`
            play(event.pcm, event.header["start_sample"])

Requests block until their reply (`re` == the request's seq). Everything else the server sends
meanwhile (chunks of running jobs, `done`, heartbeats, errors answering other messages) is kept,
in order, in a bounded buffer that `recv` and `stream` read. There is no background thread:
the client listens, and sends its heartbeats, only while one of its calls is waiting, so call
`recv` or `stream` often while jobs run (a client silent for PEER_TIMEOUT_S is gone to the
server, which then ends its loop jobs). Not thread-safe: one thread per Client, like its socket.
`docs/protocol.md` documents every message.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from continuo.server.errors import AudioError, ConfigError, ContinuoError
from continuo.server.transport.protocol import (
    DEFAULT_ENDPOINT,
    HEARTBEAT_S,
    PEER_TIMEOUT_S,
    PROTOCOL_VERSION,
    REPLY_TYPES,
    ErrorCode,
    ProtocolError,
    Sequencer,
    pack,
    unpack_header,
    unpack_pcm,
)

log = logging.getLogger(__name__)

MAX_BUFFERED_EVENTS = 10_000  # events kept for recv/stream; the oldest goes first, with a warning
RECEIVE_HWM = 10_000  # messages ZeroMQ queues from the server before it drops
SEND_HWM = 1_000  # messages queued to an unreachable server before a send fails
JOB_EVENTS = ("chunk", "done", "error")  # what `stream` yields or raises for its job


class ServerError(ContinuoError):
    """The server answered with an `error` message (or sent something unreadable)."""

    def __init__(self, code: ErrorCode, message: str, job: str | None = None,
                 header: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code.value}: {message}" + (f" (job {job})" if job else ""))
        self.code, self.message, self.job = code, message, job
        self.header = header if header is not None else {}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> ServerError:
        raw, message = header.get("code"), str(header.get("message", ""))
        try:
            code = ErrorCode(raw)
        except ValueError:  # a code this client does not know: keep it in the message
            code, message = ErrorCode.INTERNAL, f"[{raw}] {message}"
        job = header.get("job")
        return cls(code, message, job if isinstance(job, str) else None, header)


class ServerGone(ContinuoError):
    """No reply within the timeout, or nothing at all heard from the server for PEER_TIMEOUT_S
    of waiting."""


@dataclass(frozen=True)
class Event:
    """One message from the server: its header and, for a chunk, mono float32 PCM [T]."""

    header: dict[str, Any]
    pcm: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """The message type: chunk, done, error, heartbeat, ... (`header["type"]`)."""
        return self.header["type"]

    @property
    def job(self) -> str | None:
        return self.header.get("job")


class Client:
    """One connection to a Continuo server; see the module docstring.

    `curve` = (server_public, client_public, client_secret), Z85 keys as `continuo keys` writes
    them, for a server bound to a non-loopback address. `heartbeat_s` and `peer_timeout_s`
    default to the protocol's; the server expects a heartbeat at least every PEER_TIMEOUT_S.
    `identity`: a client that reconnects with the identity it had (within PEER_TIMEOUT_S of
    going silent) gets its running jobs back: their chunks, stop and param (the server hands
    the identity over to the newest connection); default a fresh one per connection.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout_s: float = 10.0,
                 name: str = "continuo-client", context: zmq.Context | None = None,
                 curve: tuple[bytes, bytes, bytes] | None = None,
                 heartbeat_s: float = HEARTBEAT_S,
                 peer_timeout_s: float = PEER_TIMEOUT_S, identity: bytes | None = None) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not 0 < heartbeat_s < peer_timeout_s:
            raise ConfigError(f"need 0 < heartbeat_s < peer_timeout_s, got {heartbeat_s!r} "
                              f"and {peer_timeout_s!r}")
        self.endpoint, self.name, self.timeout_s = endpoint, name, timeout_s
        self.heartbeat_s, self.peer_timeout_s = heartbeat_s, peer_timeout_s
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        if identity is not None:  # the same identity again: the server's jobs stay ours
            if not 1 <= len(identity) <= 255 or identity[0] == 0:
                raise ConfigError(f"identity must be 1-255 bytes not starting with 0, got "
                                  f"{identity!r}")
            self._socket.setsockopt(zmq.ROUTING_ID, identity)
        if curve is not None:
            self._set_curve(curve)
        self._socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._seq = Sequencer()
        self._buffer: deque[Event] = deque()
        self._sent_at = time.monotonic()
        self._silent_s = 0.0  # time spent waiting since the server was last heard
        self._closed = False

    def _set_curve(self, curve: tuple[bytes, bytes, bytes]) -> None:
        if not zmq.has("curve"):
            raise ConfigError("this libzmq has no CURVE support; cannot use curve keys")
        server_public, client_public, client_secret = curve
        self._socket.curve_serverkey = server_public
        self._socket.curve_publickey = client_public
        self._socket.curve_secretkey = client_secret

    # --- requests -------------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """The server's `hello` header: version, model, sample rate, presets, limits."""
        return self._call("hello", "hello", client=self.name)

    def generate(self, *, tempo: float, bars: int | None = None, clip: str | Path | None = None,
                 pcm: np.ndarray | None = None, sr: int | None = None, meter: str = "4/4",
                 chunk_beats: float = 1.0, preset: str | None = None,
                 params: dict[str, float] | None = None, seed: int | None = None,
                 loop: bool = False, track: str = "main") -> dict[str, Any]:
        """Start a job continuing `clip` (a path under the server's clip root) or `pcm`
        (mono [T] at `sr` Hz); returns the `accepted` header (its `job` names the job)."""
        fields: dict[str, Any] = {
            "tempo": float(tempo), "meter": str(meter), "chunk_beats": float(chunk_beats),
            "loop": bool(loop), "track": str(track), "bars": _maybe(int, bars),
            "clip": _maybe(str, clip), "sr": _maybe(int, sr), "preset": preset,
            "params": _maybe(_params, params), "seed": _maybe(int, seed)}
        if pcm is not None:
            pcm = np.asarray(pcm)
            if pcm.ndim != 1:
                raise AudioError(f"generate takes mono PCM [T]; got shape {pcm.shape}")
        return self._call("generate", "accepted", pcm=pcm, **fields)

    def param(self, *, job: str | None = None, track: str | None = None,
              params: dict[str, float] | None = None,
              preset: str | None = None) -> dict[str, Any]:
        """Change a running job's params/preset from its next chunk; the `accepted` header
        (its `from_chunk` is the first chunk made with them). With neither job nor track the
        server changes every job of this client and sends one `accepted` per job: this returns
        the first, `recv` the others."""
        return self._call("param", "accepted", job=job, track=track,
                          params=_maybe(_params, params), preset=preset)

    def stop(self, *, job: str | None = None, track: str | None = None) -> list[dict[str, Any]]:
        """End a job (or the job on `track`; neither: all of this client's jobs) now; the `done`
        headers of the jobs it ended. They also stay buffered, so `stream` of such a job ends."""
        seq = self._send("stop", job=job, track=track)
        deadline, done = time.monotonic() + self.timeout_s, []
        while True:
            event = self._reply(seq, "stop", deadline)
            if event.kind == "accepted":
                return done
            if event.kind != "done":
                raise _unexpected(event, "done or accepted", "stop")
            done.append(event.header)
            self._keep(event)

    def status(self) -> dict[str, Any]:
        """The server's `status` header: running jobs, clients, uptime."""
        return self._call("status", "status")

    def presets(self) -> dict[str, Any]:
        """The server's `presets` header: presets [{name, notes}] and the default."""
        return self._call("presets", "presets")

    def send_raw(self, frames: list[bytes]) -> None:
        """Send arbitrary frames as one message (for tests of the server's error handling)."""
        self._send_frames(frames)

    # --- events ---------------------------------------------------------------------------------

    def recv(self, timeout_s: float | None = None) -> Event | None:
        """The next message not yet consumed by a request or `stream`: chunk, done, error or
        heartbeat (server heartbeats show the server is alive; consecutive ones are kept as the
        latest). None after `timeout_s` (None: wait until there is one); ServerGone when the
        server stays silent for peer_timeout_s."""
        if self._buffer:
            return self._buffer.popleft()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return self._receive(deadline, "a message")

    def stream(self, job: str, timeout_s: float | None = None) -> Iterator[Event]:
        """The chunk events of `job` in order, then its `done` event, then the end. Heartbeats
        are consumed silently; other jobs' messages stay buffered. ServerError on an error for
        the job (or the server's `shutdown` error); ServerGone when the server is silent for
        peer_timeout_s or, with `timeout_s`, when no event of the job comes within timeout_s
        of the previous one. Streams of one client may be read in turn or interleaved."""
        while True:
            event = self._take(job)
            if event is None:
                event = self._wait_for_job(job, timeout_s)
            if event.kind == "error":
                raise ServerError.from_header(event.header)
            yield event
            if event.kind == "done":
                return

    def _take(self, job: str) -> Event | None:
        """Remove and return the first buffered event of `job`; drop buffered heartbeats."""
        for i, event in enumerate(self._buffer):
            if _ends_for(event, job):
                del self._buffer[i]
                return event
        if any(event.kind == "heartbeat" for event in self._buffer):
            self._buffer = deque(event for event in self._buffer if event.kind != "heartbeat")
        return None

    def _wait_for_job(self, job: str, timeout_s: float | None) -> Event:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            event = self._receive(deadline, f"job {job}")
            if event is None:
                raise ServerGone(f"no message for job {job} from {self.endpoint} within "
                                 f"{timeout_s:g} s")
            if _ends_for(event, job):
                return event
            if event.kind != "heartbeat":
                self._keep(event)

    # --- plumbing -------------------------------------------------------------------------------

    def _call(self, kind: str, reply: str, pcm: np.ndarray | None = None,
              **fields: Any) -> dict[str, Any]:
        seq = self._send(kind, pcm, **fields)
        event = self._reply(seq, kind, time.monotonic() + self.timeout_s)
        if event.kind != reply:
            raise _unexpected(event, reply, kind)
        return event.header

    def _send(self, kind: str, pcm: np.ndarray | None = None, **fields: Any) -> int:
        header = self._seq.header(kind, **{k: v for k, v in fields.items() if v is not None})
        self._send_frames(pack(header, pcm))
        return header["seq"]

    def _check_open(self) -> None:
        if self._closed:
            raise ContinuoError(f"the client of {self.endpoint} is closed")

    def _send_frames(self, frames: list[bytes]) -> None:
        self._check_open()
        try:
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again as err:
            raise ServerGone(f"{SEND_HWM} messages to {self.endpoint} are still unsent; "
                             "the server is not reading") from err
        self._sent_at = time.monotonic()

    def _reply(self, seq: int, kind: str, deadline: float) -> Event:
        """The next message with `re` == seq (error replies raise); others are buffered."""
        while True:
            event = self._receive(deadline, f"the reply to {kind}")
            if event is None:
                raise ServerGone(f"no reply to {kind} (seq {seq}) from {self.endpoint} within "
                                 f"{self.timeout_s:g} s")
            if event.header.get("re") != seq or event.kind == "heartbeat":
                self._keep(event)
            elif event.kind == "error":
                raise ServerError.from_header(event.header)
            else:
                return event

    def _receive(self, deadline: float | None, waiting_for: str) -> Event | None:
        """One message from the socket, or None at `deadline` (monotonic; None: no deadline).
        Sends heartbeats as they fall due; ServerGone after peer_timeout_s of silence."""
        self._check_open()
        while True:
            now = time.monotonic()
            if now - self._sent_at >= self.heartbeat_s:
                self._send("heartbeat")
            wake = min(self._sent_at + self.heartbeat_s, now + self.peer_timeout_s
                       - self._silent_s, math.inf if deadline is None else deadline)
            ready = dict(self._poller.poll(max(0, math.ceil((wake - now) * 1000))))
            if self._socket in ready:
                self._silent_s = 0.0
                return _parse(self._socket.recv_multipart(), self.endpoint)
            self._silent_s += time.monotonic() - now
            if self._silent_s >= self.peer_timeout_s:
                raise ServerGone(f"nothing heard from {self.endpoint} for "
                                 f"{self.peer_timeout_s:g} s while waiting for {waiting_for}")
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _keep(self, event: Event) -> None:
        """Buffer an event for recv/stream: heartbeats coalesce, the oldest goes when full."""
        if event.kind == "heartbeat" and self._buffer and self._buffer[-1].kind == "heartbeat":
            self._buffer[-1] = event
            return
        if len(self._buffer) >= MAX_BUFFERED_EVENTS:
            dropped = self._buffer.popleft()
            log.warning("%s: %d events unread; dropped the oldest (%s of job %s)",
                        self.endpoint, MAX_BUFFERED_EVENTS, dropped.kind, dropped.job)
        self._buffer.append(event)

    def close(self) -> None:
        """Close the socket at once (unsent messages are dropped); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._socket.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse(frames: list[bytes], endpoint: str) -> Event:
    """The frames of one server message → Event; ServerError(BAD_MESSAGE) when unreadable."""
    try:
        if not 1 <= len(frames) <= 2:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{len(frames)} frames")
        header = unpack_header(frames[0])
        if header.get("v") != PROTOCOL_VERSION or header.get("type") not in REPLY_TYPES:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"v {header.get('v')!r}, type "
                                f"{header.get('type')!r} (this client speaks v"
                                f"{PROTOCOL_VERSION}: {', '.join(REPLY_TYPES)})")
        pcm = unpack_pcm(frames[1], len(frames[1])) if len(frames) == 2 else None
    except ProtocolError as err:
        raise ServerError(ErrorCode.BAD_MESSAGE,
                          f"unreadable message from {endpoint}: {err}") from err
    return Event(header, pcm)


def _ends_for(event: Event, job: str) -> bool:
    """Whether `stream(job)` takes this event: the job's chunk, done or error, or the server's
    shutdown error (which ends every stream)."""
    return (event.job == job and event.kind in JOB_EVENTS) or (
        event.kind == "error" and event.header.get("code") == ErrorCode.SHUTDOWN.value)


def _unexpected(event: Event, expected: str, request: str) -> ServerError:
    return ServerError(ErrorCode.BAD_MESSAGE, f"expected {expected} in reply to {request}, got "
                       f"{event.kind}", event.job, event.header)


def _maybe(convert: Any, value: Any) -> Any:
    return None if value is None else convert(value)


def _params(params: dict[str, float]) -> dict[str, float]:
    return {str(name): float(value) for name, value in params.items()}
