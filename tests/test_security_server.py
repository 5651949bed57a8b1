"""Security against the real `continuo serve` process: a non-loopback bind without keys never
starts, CURVE keeps out clients with the wrong keys, clip paths cannot leave the clip root, and
a client flooding the server is rate limited while another client's job plays on in time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import soundfile as sf
import zmq
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401
from server_fixtures import SR, ServerProcess, collect, free_port, start_server

from continuo.bridge.client import Client, ServerError, ServerGone
from continuo.server.transport.security import load_keypair, make_keys

pytestmark = pytest.mark.timeout(300)


# --- bind policy --------------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["tcp://*:{port}", "tcp://[::]:{port}", "tcp://lo:{port}"])
def test_a_non_loopback_bind_without_keys_exits_before_binding(bind: str) -> None:
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "continuo.server.cli", "serve", "--bind",
                             bind.format(port=port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "needs CURVE keys" in result.stderr and "--keys" in result.stderr
    assert "serving on" not in result.stderr + result.stdout  # never bound, never loaded


# --- CURVE --------------------------------------------------------------------------------------


def _curve(keys: Path, server_key: Path | None = None) -> tuple[bytes, bytes, bytes]:
    client = load_keypair(keys / "client.key_secret")
    server_public = load_keypair(server_key or keys / "server.key").public
    return server_public, client.public, client.secret


@pytest.fixture(scope="module")
def curve_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[ServerProcess, Path]]:
    """`continuo serve --keys` on loopback (CURVE applies to any bind once keys are given)."""
    folder = tmp_path_factory.mktemp("curve")
    keys = folder / "keys"
    make_keys(keys)
    root, log = folder / "clips", folder / "server.log"
    root.mkdir()
    preset = write_preset(folder, model_dir, extra='precision = "float32"\n')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "continuo.server.cli", "serve", "--preset", str(preset),
            "--bind", endpoint, "--keys", str(keys), "--clip-root", str(root), "--out",
            str(folder / "jobs"), "--threads", "1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc = ServerProcess(endpoint, process, root, folder / "jobs", log)
    deadline = time.monotonic() + 90
    while "serving on" not in proc.log_text():
        assert process.poll() is None and time.monotonic() < deadline, proc.log_text()
        time.sleep(0.2)
    yield proc, keys
    proc.stop()


def test_curve_admits_only_the_authorized_key(curve_server: tuple[ServerProcess, Path],
                                              tmp_path: Path) -> None:
    proc, keys = curve_server
    stranger = tmp_path / "stranger"
    make_keys(stranger)  # a valid key pair the server was never given
    with Client(proc.endpoint, timeout_s=30, curve=_curve(keys)) as friend:
        assert friend.hello()["protocol"] == 1
    refused = {
        "wrong client key": _curve(stranger, server_key=keys / "server.key"),
        "wrong server key": _curve(keys, server_key=stranger / "server.key"),
        "no keys": None,
    }
    for what, curve in refused.items():
        with Client(proc.endpoint, timeout_s=2, curve=curve) as client, \
                pytest.raises(ServerGone):  # no reply, or not even a connection
            client.hello()
            pytest.fail(f"{what}: the server answered")
    assert proc.log_text().count("refused a CURVE client with an unknown key") >= 1
    with Client(proc.endpoint, timeout_s=30, curve=_curve(keys)) as friend:  # still serving
        assert friend.status()["type"] == "status"
    assert proc.process.poll() is None


# --- clip root ----------------------------------------------------------------------------------


def test_clip_paths_outside_the_root_are_refused(paced_server: ServerProcess) -> None:
    server = paced_server
    outside = server.root.parent / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.wav"
    sf.write(secret, sf.read(server.root / "prompt.wav")[0], SR)  # usable audio, wrong place
    link = server.root / "escape.wav"
    if not link.is_symlink():
        os.symlink(secret, link)
    (server.root / "sets").mkdir(exist_ok=True)
    with server.client() as client:
        for clip in ("../outside/secret.wav", "sets/../../outside/secret.wav", str(secret),
                     "escape.wav", "/etc/passwd"):
            with pytest.raises(ServerError) as caught:
                client.generate(clip=clip, tempo=120, bars=1)
            assert caught.value.code.value == "bad_clip", clip
            assert "outside the clip root" in caught.value.message, caught.value.message
        inside = client.generate(clip=str(server.root / "prompt.wav"), tempo=120, bars=1)
        _, done = collect(client, inside["job"])  # an absolute path inside the root is fine
    assert done["reason"] == "finished"


# --- rate limits --------------------------------------------------------------------------------

FLOOD = 2000


@pytest.fixture(scope="module")
def paced_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[ServerProcess]:
    """Default request limits, a small upload limit, chunks paced to playback (ahead 1 s)."""
    proc = start_server(model_dir, tmp_path_factory.mktemp("paced"), "--max-prompt-s", "3",
                        "--max-upload-bytes-per-s", "200000")
    yield proc
    proc.stop()


def _flood(endpoint: str) -> tuple[dict[int, dict], float]:
    """FLOOD status requests as fast as one socket sends them, reading replies meanwhile;
    → {re: reply header}, seconds the sending took."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    messages = [msgpack.packb({"v": 1, "type": "status", "seq": i}) for i in range(1, FLOOD + 1)]
    replies: dict[int, dict] = {}

    def drain(timeout_ms: int = 0) -> None:
        while dealer.poll(timeout_ms):
            header = msgpack.unpackb(dealer.recv_multipart()[0])
            if header.get("re") is not None:
                replies[header["re"]] = header
            timeout_ms = 0

    try:
        started = time.monotonic()
        for message in messages:
            dealer.send(message)
            drain()
        sent_s = time.monotonic() - started
        deadline = time.monotonic() + 30
        while len(replies) < FLOOD and time.monotonic() < deadline:
            drain(200)
    finally:
        dealer.close()
        context.term()
    return replies, sent_s


def test_a_flooding_client_is_rate_limited_and_another_plays_on_time(
    paced_server: ServerProcess,
) -> None:
    with paced_server.client() as player:
        limits = player.hello()["limits"]
        assert (limits["max_requests_per_s"], limits["request_burst"]) == (200, 400)
        job = player.generate(clip="prompt.wav", tempo=120, bars=3, chunk_beats=1)["job"]
        stream = player.stream(job, timeout_s=30)
        first = next(stream)
        replies, sent_s = _flood(paced_server.endpoint)
        assert player.status()["type"] == "status"  # the other client is not limited
        rest = list(stream)
    done = rest[-1].header
    assert done["reason"] == "finished" and len([first, *rest[:-1]]) == 12
    assert done["misses"] == 0, done  # every chunk sent by its playback deadline
    assert sorted(replies) == list(range(1, FLOOD + 1))  # every request answered once
    kinds = [r["type"] if r["type"] != "error" else r["code"] for r in replies.values()]
    allowed = 400 + 200 * (sent_s + 1)  # burst + rate over the flood (and the last replies)
    assert 400 <= kinds.count("status") <= allowed, (kinds.count("status"), sent_s)
    assert kinds.count("rate_limited") == FLOOD - kinds.count("status")
    limited = next(r for r in replies.values() if r["type"] == "error")
    assert "over 200 requests/s (burst 400): message dropped" in limited["message"]
    assert "rate limits:" in paced_server.log_text()
    print(f"flood of {FLOOD}: {kinds.count('status')} answered, {kinds.count('rate_limited')} "
          f"rate_limited, sent in {sent_s:.2f} s; the other job: {done['chunks']} chunks, "
          f"{done['misses']} misses")


def test_pcm_uploads_over_the_byte_rate_are_refused(paced_server: ServerProcess) -> None:
    pcm = np.zeros(SR, np.float32)  # 96,000 bytes; the server takes 200,000 a second
    codes = []
    with paced_server.client() as client:
        for _ in range(4):  # no bars and no loop: refused by the parser when let through
            with pytest.raises(ServerError) as caught:
                client.generate(pcm=pcm, sr=SR, tempo=120)
            codes.append(caught.value.code.value)
        assert "PCM upload of 96000 bytes over 200000 bytes/s" in caught.value.message
        time.sleep(0.6)  # 120,000 bytes back
        with pytest.raises(ServerError, match="bad_field"):
            client.generate(pcm=pcm, sr=SR, tempo=120)
    assert codes == ["bad_field", "bad_field", "rate_limited", "rate_limited"]
