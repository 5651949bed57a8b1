"""The ZeroMQ side of `continuo serve`: one ROUTER socket, one thread, every client.

The I/O loop owns the ROUTER (ZeroMQ sockets belong to one thread). It parses each request
(`protocol.parse_request`), answers it or hands it to the engine, and forwards what the engine's
worker sends: the worker (and this thread) push outgoing messages onto an inproc PUSH socket of
their own, and this loop, polling the ROUTER and that queue's PULL end together, passes them on.
Sends never block: a client too slow to take its chunks loses them at the ROUTER's high-water
mark (they are in the recording) instead of growing the server's memory.

Each client is held to its rate limits (`limits.py`: requests/s and PCM upload bytes/s, counted
before parsing); a message over them is dropped and answered with an `error` of code
`rate_limited`. Every client heard from in the last PEER_TIMEOUT_S gets a heartbeat each
HEARTBEAT_S; a client silent for longer is gone (its loop jobs end, finite jobs play out into
their recordings).
Anything malformed gets an `error` reply naming the problem and the loop goes on; so does an
unexpected failure while handling one request (code `internal`). `stop()` (SIGINT/SIGTERM in
`continuo serve`) ends every job with `done` reason "shutdown", tells every client, closes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from continuo.server import __version__
from continuo.server.engine.engine import Engine
from continuo.server.presets import available_presets, load_named_preset
from continuo.server.transport.limits import ClientLimiter, RateLimits
from continuo.server.transport.protocol import (
    DEFAULT_ENDPOINT,
    HEARTBEAT_S,
    PEER_TIMEOUT_S,
    PROTOCOL_VERSION,
    ErrorCode,
    Incoming,
    ProtocolError,
    Sequencer,
    error_header,
    pack,
    parse_request,
    unpack_header,
)
from continuo.server.transport.security import secure_server_socket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    bind: str = DEFAULT_ENDPOINT
    keys_dir: Path | None = None
    hwm: int = 1000  # messages queued per client before ZeroMQ drops
    rate: RateLimits = field(default_factory=RateLimits)


class Server:
    """Serve `engine` on `config.bind` until `stop()`; see the module doc."""

    def __init__(self, config: ServerConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context()
        self.sequencer = Sequencer()
        self.headers = self.sequencer.header
        self._outboxes = threading.local()
        self._stop = threading.Event()
        self._clients: dict[bytes, float] = {}  # identity → last heard (monotonic)
        self._started = time.monotonic()
        self.engine: Engine | None = None
        self.dropped = 0
        self.limiter = ClientLimiter(config.rate)
        self._limited_logged = 0  # limiter.dropped when last logged
        self.max_pcm_bytes = 0
        self._outbox = f"inproc://continuo-outbox-{id(self):x}"

    def send(self, client: bytes, frames: list[bytes]) -> None:
        """Queue one message for `client`; safe from any thread."""
        sock = getattr(self._outboxes, "socket", None)
        if sock is None:
            sock = self.context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._outbox)
            self._outboxes.socket = sock
        sock.send_multipart([client, *frames])

    def stop(self) -> None:
        self._stop.set()

    def serve(self, engine: Engine, info: dict[str, Any]) -> None:
        """Run the loop until stop(); info: what `hello` tells clients about the model."""
        limits = {**info.get("limits", {}), **self.config.rate.as_dict()}
        self.engine, self.info = engine, {**info, "limits": limits}
        self.max_pcm_bytes = engine.config.max_pcm_bytes(engine.sample_rate)
        router = self.context.socket(zmq.ROUTER)
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, self.config.hwm),
                              (zmq.RCVHWM, self.config.hwm), (zmq.ROUTER_HANDOVER, 1),
                              (zmq.MAXMSGSIZE, 2 * self.max_pcm_bytes + (1 << 20))):
            router.setsockopt(option, value)
        auth = secure_server_socket(router, self.config.bind, self.config.keys_dir, self.context)
        outbox = self.context.socket(zmq.PULL)
        outbox.bind(self._outbox)
        try:
            router.bind(self.config.bind)
            log.info("serving on %s (protocol %d)", self.config.bind, PROTOCOL_VERSION)
            engine.start()
            self._loop(router, outbox)
        finally:
            engine.shutdown()
            for client in self._clients:
                self.send(client, pack(error_header(self.sequencer, ErrorCode.SHUTDOWN,
                                                    "the server is stopping")))
            while outbox.poll(100):  # what the engine and the lines above queued
                _drain(outbox, router)
            for sock in (router, outbox, getattr(self._outboxes, "socket", None)):
                if sock is not None:
                    sock.close(0)
            if auth is not None:
                auth.stop()
            log.info("stopped (%d messages dropped for slow or gone clients)", self.dropped)

    def _loop(self, router: zmq.Socket, outbox: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self._stop.is_set():
            events = dict(poller.poll(timeout=100))
            if router in events:
                for _ in range(100):  # a burst, without starving the outbox
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames[0], frames[1:])
            self.dropped += _drain(outbox, router)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                self._heartbeats()

    def _heartbeats(self) -> None:
        now = time.monotonic()
        for client, heard in list(self._clients.items()):
            if now - heard > PEER_TIMEOUT_S:
                log.info("client %s silent for %.1f s: gone", client.hex(), now - heard)
                del self._clients[client]
                self.limiter.forget(client)
                self.engine.client_gone(client)
            else:
                self.send(client, pack(self.headers("heartbeat")))
        if self.limiter.dropped > self._limited_logged:
            log.warning("rate limits: %d messages dropped in the last %g s (%d in all)",
                        self.limiter.dropped - self._limited_logged, HEARTBEAT_S,
                        self.limiter.dropped)
            self._limited_logged = self.limiter.dropped

    def _handle(self, client: bytes, frames: list[bytes]) -> None:
        now = self._clients[client] = time.monotonic()
        refused = self.limiter.admit(client, frames, now)
        if refused is not None:
            self.send(client, pack(error_header(self.sequencer, ErrorCode.RATE_LIMITED, refused,
                                                re=_seq_of(frames))))
            return
        seq = None
        try:
            incoming = parse_request(frames, self.max_pcm_bytes)
            seq = incoming.request.seq
            self._dispatch(client, incoming)
        except ProtocolError as err:
            log.info("client %s: %s", client.hex(), err)
            self.send(client, pack(error_header(self.sequencer, err.code, err.message, err.job,
                                                err.seq if err.seq is not None else seq)))
        except Exception as err:  # a bug handling one request must not stop the server
            log.exception("handling a request from %s", client.hex())
            self.send(client, pack(error_header(self.sequencer, ErrorCode.INTERNAL,
                                                f"{type(err).__name__}: {err}", re=seq)))

    def _dispatch(self, client: bytes, incoming: Incoming) -> None:
        request, engine, seq = incoming.request, self.engine, incoming.request.seq
        kind = request.type
        if kind == "generate":
            engine.generate(client, request, incoming.pcm)
        elif kind == "param":
            engine.param(client, request)
        elif kind == "stop":
            engine.stop(client, request)
        elif kind == "hello":
            log.info("client %s: hello (%s)", client.hex(), request.client or "unnamed")
            self.send(client, pack(self.headers("hello", re=seq, **self.info)))
        elif kind == "status":
            self.send(client, pack(self.headers(
                "status", re=seq, jobs=engine.status(), clients=len(self._clients),
                uptime_s=round(time.monotonic() - self._started, 3))))
        elif kind == "presets":
            self.send(client, pack(self.headers("presets", re=seq,
                                                presets=_presets(engine.config.preset_dirs),
                                                default=engine.preset.name)))
        else:  # heartbeat
            self.send(client, pack(self.headers("heartbeat", re=seq)))


def _seq_of(frames: list[bytes]) -> int | None:
    """The seq of a message that will not be parsed further, when its header has one."""
    try:
        seq = unpack_header(frames[0]).get("seq") if frames else None
    except ProtocolError:
        return None
    return seq if type(seq) is int else None


def _drain(outbox: zmq.Socket, router: zmq.Socket) -> int:
    """Forward every queued message to its client; → how many were dropped."""
    dropped = 0
    while True:
        try:
            frames = outbox.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return dropped
        try:
            router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            dropped += 1


def _presets(folders: tuple[Path, ...]) -> list[dict[str, str]]:
    out = []
    for name in available_presets(folders):
        try:
            out.append({"name": name, "notes": load_named_preset(name, folders).notes})
        except Exception as err:  # a broken preset file is reported, not fatal
            out.append({"name": name, "notes": f"(invalid: {err})"})
    return out


def hello_info(engine: Engine, model: str) -> dict[str, Any]:
    """What `hello` replies, besides re."""
    return {"server": f"continuo {__version__}", "protocol": PROTOCOL_VERSION, "model": model,
            "sample_rate": engine.sample_rate,
            "presets": available_presets(engine.config.preset_dirs),
            "default_preset": engine.preset.name,
            "limits": engine.config.limits(engine.sample_rate), "heartbeat_s": HEARTBEAT_S}
