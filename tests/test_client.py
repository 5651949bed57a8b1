"""The client against a real ZeroMQ ROUTER on loopback, run by the test in a thread.

The peer parses each request with the real protocol (so a client bug that sends a bad request
fails here), answers heartbeats and unreadable requests as the server does, and answers other
requests with the messages a test scripts for it, each after an optional delay.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import zmq

from continuo.bridge.client import MAX_BUFFERED_EVENTS, Client, ServerError, ServerGone
from continuo.server.errors import AudioError, ContinuoError
from continuo.server.transport.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Generate,
    Heartbeat,
    Hello,
    Incoming,
    ProtocolError,
    Sequencer,
    Status,
    error_header,
    pack,
    parse_request,
)

MAX_PCM_BYTES = 1 << 20


@dataclass(frozen=True)
class Out:
    """One message the peer sends, `after_s` seconds after the request it answers."""

    frames: list[bytes]
    after_s: float = 0.0


Answer = Callable[[Incoming, Sequencer], list[Out]]


class Peer:
    """A ROUTER bound to a random loopback port, served by a thread until `close`."""

    def __init__(self, answer: Answer, server_secret: bytes | None = None,
                 heartbeats: bool = True) -> None:
        self.answer, self.seq, self.heartbeats = answer, Sequencer(), heartbeats
        self.received: list[Incoming | ProtocolError] = []
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        if server_secret is not None:
            self._socket.curve_server = True
            self._socket.curve_secretkey = server_secret
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._pending: list[tuple[float, bytes, list[bytes]]] = []
        self.failure: Exception | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def requests(self, kind: type) -> list:
        return [r.request for r in list(self.received)
                if isinstance(r, Incoming) and isinstance(r.request, kind)]

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._closing.is_set():
                if poller.poll(5):
                    identity, *frames = self._socket.recv_multipart()
                    now = time.monotonic()
                    self._pending += [(now + out.after_s, identity, out.frames)
                                      for out in self._reply(frames)]
                    self._pending.sort(key=lambda item: item[0])
                while self._pending and self._pending[0][0] <= time.monotonic():
                    _, identity, frames = self._pending.pop(0)
                    self._socket.send_multipart([identity, *frames])
        except Exception as err:  # a broken test script: fail that test, not the next one
            self.failure = err
        finally:
            self._socket.close()
            self._context.term()

    def _reply(self, frames: list[bytes]) -> list[Out]:
        try:
            incoming = parse_request(frames, MAX_PCM_BYTES)
        except ProtocolError as err:
            self.received.append(err)
            return [Out(pack(error_header(self.seq, err.code, err.message, err.job, err.seq)))]
        self.received.append(incoming)
        if isinstance(incoming.request, Heartbeat):
            return [Out(pack(self.seq.header("heartbeat", re=incoming.request.seq)))
                    ] if self.heartbeats else []
        return self.answer(incoming, self.seq)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        if self.failure is not None:
            raise RuntimeError("the peer's answer failed") from self.failure


@pytest.fixture
def peer_with() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(answer: Answer, **kwargs: object) -> Peer:
        peers.append(Peer(answer, **kwargs))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


def msg(seq: Sequencer, kind: str, pcm: np.ndarray | None = None, after_s: float = 0.0,
        **fields: object) -> Out:
    return Out(pack(seq.header(kind, **fields), pcm), after_s)


def chunk(seq: Sequencer, job: str, index: int, last: bool = False, **kwargs: object) -> Out:
    pcm = np.full(100, index + (0.5 if job == "j0" else 0.0), np.float32)
    return msg(seq, "chunk", pcm, job=job, track="main", index=index, bar=index // 4,
               beat=float(index % 4), beat_exact=[index % 4, 1], start_sample=100 * index,
               n_samples=100, sample_rate=24000, params={}, preset="piano", last=last, **kwargs)


def done(seq: Sequencer, job: str, re: int | None = None, reason: str = "finished",
         after_s: float = 0.0) -> Out:
    return msg(seq, "done", job=job, track="main", reason=reason, chunks=3, samples=300,
               recording=f"out/{job}.wav", sidecar=f"out/{job}.json", re=re, after_s=after_s)


def accepted(seq: Sequencer, re: int, job: str = "j1") -> Out:
    return msg(seq, "accepted", re=re, job=job, track="main", sample_rate=24000, tempo=96.0,
               meter="4/4", bars=2, chunk_beats=1.0, preset="piano", seed=3, loop=False,
               params={"temperature": 0.5}, recording=f"out/{job}.wav", total_samples=300)


def silent(incoming: Incoming, seq: Sequencer) -> list[Out]:
    return []


HELLO = {"server": "continuo 0.1.0", "protocol": PROTOCOL_VERSION, "model": "piano",
         "sample_rate": 24000, "presets": ["piano"], "default_preset": "piano",
         "limits": {"max_jobs": 4, "max_bars": 1000, "max_prompt_s": 30.0,
                    "max_pcm_bytes": MAX_PCM_BYTES, "max_chunk_beats": 16.0},
         "heartbeat_s": 1.0}


def hello_peer(incoming: Incoming, seq: Sequencer) -> list[Out]:
    return [msg(seq, "hello", re=incoming.request.seq, **HELLO)]


def test_hello(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(hello_peer)
    with Client(peer.endpoint, name="test bridge") as client:
        reply = client.hello()
    assert {k: reply[k] for k in HELLO} == HELLO
    assert (reply["type"], reply["re"]) == ("hello", 1)
    [request] = peer.requests(Hello)
    assert (request.client, request.seq) == ("test bridge", 1)


def test_replies_correlate_and_other_messages_wait_for_stream(
        peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        re = incoming.request.seq
        return [chunk(seq, "j0", 0), msg(seq, "heartbeat"), chunk(seq, "j1", 0),
                msg(seq, "error", code="bad_field", message="x", job=None, re=re + 50),
                accepted(seq, re), chunk(seq, "j1", 1), chunk(seq, "j0", 1),
                chunk(seq, "j1", 2, last=True), done(seq, "j1"), done(seq, "j0")]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client:
        reply = client.generate(clip="bach/a.wav", tempo=96, bars=2, seed=3,
                                params={"temperature": 0.5})
        assert (reply["type"], reply["job"], reply["re"]) == ("accepted", "j1", 1)
        events = list(client.stream("j1", timeout_s=5))
        rest = [client.recv(timeout_s=5) for _ in range(4)]
    assert [(e.kind, e.header.get("index")) for e in events] == \
        [("chunk", 0), ("chunk", 1), ("chunk", 2), ("done", None)]
    for i, event in enumerate(events[:3]):
        np.testing.assert_array_equal(event.pcm, np.full(100, float(i), np.float32))
    assert events[-1].pcm is None and events[-1].header["reason"] == "finished"
    assert [(e.kind, e.job, e.header.get("index")) for e in rest] == \
        [("chunk", "j0", 0), ("error", None, None), ("chunk", "j0", 1), ("done", "j0", None)]
    [request] = peer.requests(Generate)
    assert (request.clip, request.tempo, request.bars, request.seed, request.params) == \
        ("bach/a.wav", 96.0, 2, 3, {"temperature": 0.5})
    assert (request.sr, request.preset, request.meter, request.track) == \
        (None, None, "4/4", "main")


def test_generate_sends_pcm(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(lambda incoming, seq: [accepted(seq, incoming.request.seq)])
    pcm = np.sin(np.arange(2205) / 10.0)  # float64: sent as float32
    with Client(peer.endpoint) as client:
        client.generate(pcm=pcm, sr=22050, tempo=np.float32(120), loop=True, track="pad 2")
        with pytest.raises(AudioError, match=r"mono PCM \[T\]; got shape \(2, 10\)"):
            client.generate(pcm=np.zeros((2, 10)), sr=22050, tempo=120, bars=1)
    [incoming] = [r for r in peer.received
                  if isinstance(r, Incoming) and isinstance(r.request, Generate)]
    np.testing.assert_array_equal(incoming.pcm, pcm.astype(np.float32))
    request = incoming.request
    assert (request.sr, request.clip, request.loop, request.bars, request.track) == \
        (22050, None, True, None, "pad 2")


def test_stop_returns_the_done_headers_and_ends_their_streams(
        peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        re = incoming.request.seq
        if incoming.request.type == "generate":
            return [accepted(seq, re), chunk(seq, "j1", 0)]
        return [done(seq, "j1", re, "stopped"), done(seq, "j2", re, "stopped"),
                msg(seq, "accepted", re=re, stopped=["j1", "j2"])]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client:
        client.generate(clip="a.wav", tempo=120, bars=8)
        stopped = client.stop()
        assert [(h["job"], h["reason"], h["re"]) for h in stopped] == \
            [("j1", "stopped", 2), ("j2", "stopped", 2)]
        assert [e.kind for e in client.stream("j1", timeout_s=1)] == ["chunk", "done"]
        assert [e.header for e in client.stream("j2", timeout_s=1)] == [stopped[1]]


@pytest.mark.parametrize(("call", "code"), [
    (lambda c: c.generate(clip="a.wav", tempo=120, bars=2, preset="nope"),
     ErrorCode.UNKNOWN_PRESET),
    (lambda c: c.stop(track="drums"), ErrorCode.UNKNOWN_JOB),
    (lambda c: c.param(job="j9", params={"temperature": 2}), ErrorCode.UNKNOWN_JOB),
])
def test_error_reply_raises_server_error(peer_with: Callable[..., Peer], call: Callable,
                                         code: ErrorCode) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        return [Out(pack(error_header(seq, code, "no such thing", re=incoming.request.seq)))]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client, pytest.raises(ServerError) as caught:
        call(client)
    assert (caught.value.code, caught.value.message) == (code, "no such thing")
    assert caught.value.header["re"] == 1
    assert str(caught.value) == f"{code.value}: no such thing"


def test_stream_raises_on_an_error_for_its_job(peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        return [accepted(seq, incoming.request.seq), chunk(seq, "j1", 0),
                msg(seq, "error", code="internal", message="other job", job="j9", re=None),
                msg(seq, "error", code="internal", message="decoder failed", job="j1", re=None,
                    after_s=0.1)]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client:
        client.generate(clip="a.wav", tempo=120, bars=2)
        stream = client.stream("j1", timeout_s=5)
        assert next(stream).kind == "chunk"
        with pytest.raises(ServerError, match="internal: decoder failed") as caught:
            next(stream)
        assert (caught.value.code, caught.value.job) == (ErrorCode.INTERNAL, "j1")
        assert client.recv(timeout_s=1).header["message"] == "other job"


def test_the_servers_shutdown_error_ends_every_stream(peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        return [accepted(seq, incoming.request.seq), chunk(seq, "j1", 0),
                done(seq, "j1", reason="shutdown", after_s=0.05),
                msg(seq, "error", code="shutdown", message="the server is stopping", job=None,
                    re=None, after_s=0.05)]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client:
        client.generate(clip="a.wav", tempo=120, bars=2)
        assert [e.header.get("reason") for e in client.stream("j1", timeout_s=5)] == \
            [None, "shutdown"]
        with pytest.raises(ServerError, match="shutdown: the server is stopping"):
            next(client.stream("j7", timeout_s=5))


def test_server_gone_when_a_request_gets_no_reply(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(silent)
    with Client(peer.endpoint, timeout_s=0.3) as client:
        start = time.monotonic()
        with pytest.raises(ServerGone, match=rf"no reply to hello \(seq 1\) from "
                                             rf"{peer.endpoint} within 0.3 s"):
            client.hello()
        assert 0.3 <= time.monotonic() - start < 2.0


def test_heartbeats_are_sent_only_while_waiting(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(silent)
    with Client(peer.endpoint, timeout_s=0.75, heartbeat_s=0.2) as client:
        with pytest.raises(ServerGone, match="reply to status"):
            client.status()
        time.sleep(0.3)  # peer's heartbeat replies arrive; the peer has read everything
        beats = peer.requests(Heartbeat)
        assert 2 <= len(beats) <= 4
        assert [b.seq for b in beats] == list(range(2, 2 + len(beats)))  # after status (seq 1)
        time.sleep(0.5)  # not waiting: no heartbeats (no background thread)
        assert len(peer.requests(Heartbeat)) == len(beats)
        assert [type(r) for r in peer.requests(Status)] == [Status]
        # the peer answered each heartbeat; recv shows them (consecutive ones coalesced)
        event = client.recv(timeout_s=0)
        assert event.kind == "heartbeat" and event.header["re"] in {b.seq for b in beats}


def test_server_gone_when_silent_while_receiving(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(silent, heartbeats=False)
    with Client(peer.endpoint, heartbeat_s=0.1, peer_timeout_s=0.5) as client:
        start = time.monotonic()
        with pytest.raises(ServerGone, match=rf"nothing heard from {peer.endpoint} for 0.5 s"):
            client.recv()
        assert 0.5 <= time.monotonic() - start < 2.0
    gone = peer_with(silent)
    gone.close()  # no peer at all: the same, through many short waits
    with Client(gone.endpoint, heartbeat_s=0.1, peer_timeout_s=0.5) as client, \
            pytest.raises(ServerGone):
        for _ in range(100):
            assert client.recv(timeout_s=0.05) is None


def test_stream_consumes_heartbeats_and_outlives_peer_timeout(
        peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        return [accepted(seq, incoming.request.seq), msg(seq, "heartbeat"),
                chunk(seq, "j1", 0, after_s=0.8), done(seq, "j1", after_s=0.8)]

    peer = peer_with(answer)
    with Client(peer.endpoint, heartbeat_s=0.1, peer_timeout_s=0.5) as client:
        client.generate(clip="a.wav", tempo=120, bars=1)
        assert [e.kind for e in client.stream("j1")] == ["chunk", "done"]
    assert len(peer.requests(Heartbeat)) >= 4  # they kept the server answering


def test_buffer_keeps_the_newest_events(peer_with: Callable[..., Peer],
                                        caplog: pytest.LogCaptureFixture) -> None:
    extra = 5

    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        chunks = [chunk(seq, "j1", i) for i in range(MAX_BUFFERED_EVENTS + extra)]
        return [*chunks, msg(seq, "status", re=incoming.request.seq, jobs=[], clients=1,
                             uptime_s=1.0)]

    peer = peer_with(answer)
    with Client(peer.endpoint) as client, caplog.at_level(logging.WARNING):
        assert client.status()["clients"] == 1
        indices = []
        while (event := client.recv(timeout_s=0)) is not None:
            if event.kind == "chunk":
                indices.append(event.header["index"])
    assert indices == list(range(extra, MAX_BUFFERED_EVENTS + extra))
    drops = [r for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(drops) == extra


def test_send_raw_garbage_gets_an_error_event(peer_with: Callable[..., Peer]) -> None:
    peer = peer_with(silent)
    with Client(peer.endpoint) as client:
        client.send_raw([b"\xc1 not msgpack"])
        event = client.recv(timeout_s=2)
    assert (event.kind, event.header["code"], event.header["re"]) == ("error", "bad_message", None)
    assert "header is not msgpack" in event.header["message"]


def test_unreadable_or_unexpected_replies_raise(peer_with: Callable[..., Peer]) -> None:
    def answer(incoming: Incoming, seq: Sequencer) -> list[Out]:
        if incoming.request.type == "hello":
            return [Out([b"\xc1"])]
        return [msg(seq, "presets", re=incoming.request.seq, presets=[], default="piano")]

    peer = peer_with(answer)
    with Client(peer.endpoint, timeout_s=2) as client:
        with pytest.raises(ServerError, match=f"unreadable message from {peer.endpoint}"):
            client.hello()
        with pytest.raises(ServerError, match="expected status in reply to status, got presets"):
            client.status()


def test_curve_keys(peer_with: Callable[..., Peer]) -> None:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    peer = peer_with(hello_peer, server_secret=server_secret)
    with Client(peer.endpoint, curve=(server_public, client_public, client_secret)) as client:
        assert client.hello()["model"] == "piano"
    wrong_public, _ = zmq.curve_keypair()
    with Client(peer.endpoint, timeout_s=0.3,
                curve=(wrong_public, client_public, client_secret)) as client, \
            pytest.raises(ServerGone):
        client.hello()


def test_closed_client_refuses_calls(peer_with: Callable[..., Peer]) -> None:
    client = Client(peer_with(hello_peer).endpoint)
    client.close()
    client.close()
    with pytest.raises(ContinuoError, match="closed"):
        client.hello()
    with pytest.raises(ContinuoError, match="closed"):
        client.recv(timeout_s=0)


def test_client_imports_without_torch() -> None:
    code = ("import sys, continuo.bridge.client; "
            "assert 'torch' not in sys.modules, 'the client imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
