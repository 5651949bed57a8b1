"""`continuo-bridge` with real peers: liblo's `oscsend` triggers a generation on a real server,
`oscdump` receives the replies; bad OSC gets /continuo/error and the bridge keeps running;
the bridge reconnects by itself when the server restarts."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from pythonosc.udp_client import SimpleUDPClient
from server_fixtures import ServerProcess, free_port, server, start_server  # noqa: F401

from continuo.bridge.inbox import OscInbox
from continuo.bridge.osc import OscError, parse_message

pytestmark = pytest.mark.timeout(300)  # liblo-tools (oscsend, oscdump): .ci/run installs it


class Dump:
    """`oscdump PORT` in the background; its lines, parsed as (address, args text)."""

    def __init__(self, port: int, log: Path) -> None:
        self.log = log
        self.sink = log.open("wb")
        self.process = subprocess.Popen(["oscdump", "-L", str(port)], stdout=self.sink,
                                        stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def wait_for(self, pattern: str, timeout_s: float = 60, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hits = [line for line in self.lines() if re.search(pattern, line)]
            if len(hits) >= count:
                return hits
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} from the bridge within {timeout_s} s; got:\n"
                             + "\n".join(self.lines()[-20:]))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        self.sink.close()


class BridgeProcess:
    def __init__(self, server_endpoint: str, reply_port: int, folder: Path) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.out = folder / "chunks"
        self.log = folder / "bridge.log"
        argv = [sys.executable, "-m", "continuo.bridge.cli", "--server", server_endpoint,
                "--osc-port", str(self.port), "--reply", f"127.0.0.1:{reply_port}",
                "--out", str(self.out), "--chunk-beats", "1", "--no-audio"]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)

    def send(self, address: str, types: str = "", *args: object) -> None:
        """Through liblo's oscsend, as a patch or DAW script would."""
        subprocess.run(["oscsend", "localhost", str(self.port), address, types,
                        *map(str, args)], check=True, timeout=10)

    def close(self) -> int:
        self.process.terminate()
        return self.process.wait(10)


@pytest.fixture
def rig(server: ServerProcess, tmp_path: Path) -> Iterator[tuple[BridgeProcess, Dump]]:  # noqa: F811
    reply_port = free_port(socket.SOCK_DGRAM)
    dump = Dump(reply_port, tmp_path / "dump.txt")
    bridge = BridgeProcess(server.endpoint, reply_port, tmp_path)
    dump.wait_for(r"/continuo/status .*connected", 30)
    yield bridge, dump
    assert bridge.close() == 0, bridge.log.read_text()
    dump.close()


def _chunks(lines: list[str]) -> list[tuple[str, int, float, int]]:
    out = []
    for line in lines:
        m = re.search(r'/continuo/chunk \S+ "([^"]+)" (\d+) ([\d.]+) (\d+)', line)
        if m:
            out.append((m[1], int(m[2]), float(m[3]), int(m[4])))
    return out


def test_oscsend_generate_gives_chunk_files_that_make_the_recording(
    rig: tuple[BridgeProcess, Dump],
) -> None:
    bridge, dump = rig
    bridge.send("/continuo/generate", "sfi", "prompt.wav", 120.0, 2)
    done = dump.wait_for(r"/continuo/done")[0]
    chunks = _chunks(dump.lines())
    assert [c[3] for c in chunks] == list(range(8))  # 2 bars of 4/4, 1-beat chunks
    assert [(c[1], c[2]) for c in chunks] == [(i // 4, float(i % 4)) for i in range(8)]
    audio = np.concatenate([sf.read(c[0], dtype="float32")[0] for c in chunks])
    recording = re.search(r'"([^"]+\.wav)"', done)[1]
    assert "finished" in done
    np.testing.assert_array_equal(audio, sf.read(recording, dtype="float32")[0])


def test_bad_osc_gets_errors_and_the_bridge_keeps_running(
    rig: tuple[BridgeProcess, Dump],
) -> None:
    bridge, dump = rig
    bridge.send("/continuo/generate", "i", 5)  # wrong count
    bridge.send("/continuo/generate", "sss", "prompt.wav", "fast", "2")  # wrong types
    bridge.send("/continuo/generate", "sfi", "prompt.wav", 5000.0, 2)  # tempo out of range
    bridge.send("/continuo/dance")  # unknown address
    bridge.send("/continuo/param", "sf", "warmth", 0.5)  # unknown parameter
    bridge.send("/continuo/generate", "sfi", "../../etc/passwd", 120.0, 1)  # outside the root
    bridge.send("/continuo/stop")  # nothing playing
    python = SimpleUDPClient("127.0.0.1", bridge.port)
    python.send_message("/continuo/generate", [b"\x00" * 60_000, 120.0, 2])  # a huge blob
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\xff garbage, not OSC", ("127.0.0.1", bridge.port))
    errors = dump.wait_for(r"/continuo/error", count=9)
    text = "\n".join(errors)
    for words in ("takes 3–4 arguments", "tempo must be a number", "tempo must be a number in",
                  "unknown address '/continuo/dance'", "unknown parameter 'warmth'",
                  "bad_clip", "unknown_job", "blob of 60000 bytes", "not an OSC packet"):
        assert words in text, (words, text)
    bridge.send("/continuo/status")
    dump.wait_for(r"/continuo/status .*connected", 10, count=2)
    bridge.send("/continuo/generate", "sfi", "prompt.wav", 100.0, 1)  # still serving
    assert "finished" in dump.wait_for(r"/continuo/done")[0]


def test_the_bridge_reconnects_when_the_server_restarts(
    model_dir: Path, tmp_path: Path,
) -> None:
    first = start_server(model_dir, tmp_path / "a")
    reply_port = free_port(socket.SOCK_DGRAM)
    dump = Dump(reply_port, tmp_path / "dump.txt")
    bridge = BridgeProcess(first.endpoint, reply_port, tmp_path)
    try:
        dump.wait_for(r"/continuo/status .*connected", 30)
        first.stop()
        dump.wait_for(r"/continuo/status .*reconnecting", 30)
        second = start_server(model_dir, tmp_path / "b", endpoint=first.endpoint)
        try:
            dump.wait_for(r"/continuo/status .*connected", 30, count=2)
            bridge.send("/continuo/generate", "sfi", "prompt.wav", 120.0, 1)
            assert "finished" in dump.wait_for(r"/continuo/done", 60)[0]
        finally:
            second.stop()
    finally:
        bridge.close()
        dump.close()


def test_parse_message_checks_every_argument() -> None:
    assert parse_message("/continuo/generate", ["a.wav", 120, 4]).tempo == 120.0
    assert parse_message("/continuo/generate", ["a.wav", 93.7, 4, "piano"]).preset == "piano"
    assert parse_message("/continuo/loop", [1]).on is True
    assert parse_message("/continuo/loop", [False]).on is False
    for address, args, words in (
        ("/continuo/generate", ["a.wav", 120, 2.5], "bars must be a whole number"),
        ("/continuo/generate", ["", 120, 2], "clip must be a non-empty string"),
        ("/continuo/tempo", [float("nan")], "bpm must be a number"),
        ("/continuo/tempo", [19.9], "in 20..999"),
        ("/continuo/loop", [2], "on must be a whole number in 0..1"),
        ("/continuo/stop", [1], "takes 0 arguments"),
        ("/other", [], "unknown address"),
    ):
        with pytest.raises(OscError, match=re.escape(words)):
            parse_message(address, args)


def test_a_burst_the_loop_has_not_read_yet_is_kept_whole() -> None:
    """2,000 datagrams arriving while the bridge's loop is busy (nothing drains the inbox) are
    all queued, the last one included: it is the value a dragged slider ends on."""
    inbox = OscInbox("127.0.0.1", 0)
    inbox.start()
    try:
        client = SimpleUDPClient("127.0.0.1", inbox.port)
        for i in range(2000):
            client.send_message("/continuo/param", ["temperature", 0.5 + i / 2000])
            if i % 200 == 199:
                time.sleep(0.01)  # let the reader thread keep up with the kernel buffer
        deadline = time.monotonic() + 10
        while inbox.messages.qsize() < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inbox.messages.qsize() == 2000
        last = list(inbox.messages.queue)[-1]
        assert last[0] == "/continuo/param" and last[1][1] == pytest.approx(0.5 + 1999 / 2000)
    finally:
        inbox.close()
