"""A real `continuo serve` process on loopback with the tiny model, for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import write_preset

from continuo.bridge.client import Client, Event, ServerGone

SR = 24000


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free loopback port for TCP (default) or UDP (socket.SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    endpoint: str
    process: subprocess.Popen
    root: Path  # the clip root (prompt.wav is there)
    out: Path  # recordings
    log: Path

    def client(self, timeout_s: float = 30.0, identity: bytes | None = None) -> Client:
        return Client(self.endpoint, timeout_s=timeout_s, name="pytest", identity=identity)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout_s)


def start_server(model_dir: Path, folder: Path, *extra: str,
                 endpoint: str | None = None) -> ServerProcess:
    """Start `continuo serve` on `endpoint` (default a free loopback port) with the tiny model;
    wait for hello."""
    folder.mkdir(parents=True, exist_ok=True)
    root, out, log = folder / "clips", folder / "jobs", folder / "server.log"
    root.mkdir(exist_ok=True)
    sf.write(root / "prompt.wav", render_piano(progression_notes())[: 2 * SR], SR)
    preset = write_preset(folder, model_dir, extra='precision = "float32"\n')
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "continuo.server.cli", "serve", "--preset", str(preset),
            "--bind", endpoint, "--clip-root", str(root), "--out", str(out), "--threads", "1",
            *extra]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(endpoint, process, root, out, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            with server.client(timeout_s=2.0) as probe:
                probe.hello()
            return server
        except ServerGone:
            continue
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not answer within 90 s:\n{server.log_text()}")


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that generates as fast as it can (no playback pacing)."""
    proc = start_server(model_dir, tmp_path_factory.mktemp("serve"), "--ahead-s", "100000",
                        "--max-prompt-s", "3")
    yield proc
    proc.stop()


def collect(client: Client, job: str, timeout_s: float = 60.0) -> tuple[list[Event], dict]:
    """Every chunk of `job` and its done header."""
    chunks, done = [], None
    for event in client.stream(job, timeout_s=timeout_s):
        if event.kind == "chunk":
            chunks.append(event)
        elif event.kind == "done":
            done = event.header
    assert done is not None
    return chunks, done


def joined(chunks: list[Event]) -> np.ndarray:
    return np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, np.float32)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
