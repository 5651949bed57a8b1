"""The OSC inbox: a UDP socket read on its own thread, each datagram parsed with python-osc and
queued as (address, arguments, sender, arrival time); a datagram that is not OSC is queued with
address None and what was wrong, for its sender to be told."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from time import perf_counter
from typing import Any

from pythonosc.osc_packet import OscPacket, ParseError

log = logging.getLogger(__name__)
Address = tuple[str, int]
Inbound = tuple[str | None, Any, Address, float]  # address (None: not OSC), args, sender, time
MAX_DATAGRAM = 65_536


class OscInbox:
    """A UDP socket read on its own thread; messages queued as (address, args, sender)."""

    def __init__(self, host: str, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((host, port))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.messages: queue.Queue[Inbound] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="osc-inbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.socket.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            now = perf_counter()
            try:
                items = [(m.message.address, list(m.message.params), sender, now)
                         for m in OscPacket(data).messages]
            except (ParseError, ValueError, IndexError) as err:
                items = [(None, f"not an OSC packet ({len(data)} bytes: {err})", sender, now)]
            for item in items:
                try:
                    self.messages.put_nowait(item)
                except queue.Full:
                    log.warning("OSC inbox full: dropped %s", item[0])
