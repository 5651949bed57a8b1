"""A real `continuo-bridge` process for tests, and a python-osc receiver for its replies."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pythonosc.osc_packet import OscPacket
from pythonosc.udp_client import SimpleUDPClient
from server_fixtures import free_port


class Replies:
    """Every OSC message sent to a UDP port on 127.0.0.1, as (address, args), in order."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.messages: list[tuple[str, list[Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65_536)
            except TimeoutError:
                continue
            self._received(time.perf_counter(), [(m.message.address, list(m.message.params))
                                                 for m in OscPacket(data).messages])

    def _received(self, now: float, messages: list[tuple[str, list[Any]]]) -> None:
        """One datagram's messages, arrived at `now` (perf_counter s)."""
        self.messages.extend(messages)

    def of(self, address: str) -> list[list[Any]]:
        return [args for a, args in list(self.messages) if a == address]

    def wait_for(self, address: str, count: int = 1, timeout_s: float = 60) -> list[list[Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(hits := self.of(address)) >= count:
                return hits
            time.sleep(0.02)
        raise AssertionError(f"{count} × {address} not received within {timeout_s} s; got "
                             f"{self.messages[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()


class BridgeProcess:
    """`continuo-bridge` on a free OSC port, replying to `reply_port`; its log in `folder`."""

    def __init__(self, server_endpoint: str, reply_port: int, folder: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port(socket.SOCK_DGRAM)
        self.out = folder / "chunks"
        self.log = folder / "bridge.log"
        argv = [sys.executable, "-m", "continuo.bridge.cli", "--server", server_endpoint,
                "--osc-port", str(self.port), "--reply", f"127.0.0.1:{reply_port}",
                "--out", str(self.out), *extra]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        self.osc = SimpleUDPClient("127.0.0.1", self.port)

    def send(self, address: str, *args: Any) -> None:
        self.osc.send_message(address, list(args))

    def close(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(10)
        finally:
            self.osc._sock.close()
