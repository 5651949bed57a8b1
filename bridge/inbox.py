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
RECEIVE_BUFFER_BYTES = 4 << 20
# Messages waiting for the bridge's loop: more than the kernel buffer holds, so a burst read
# while the loop is busy (a slider dragged on a loaded machine) is never cut here; with 1,000 a
# CI run lost the burst's last message, the value that should hold
QUEUE_MESSAGES = 16_384
BUNDLE = b"#bundle\0"
MAX_BUNDLE_DEPTH = 8


class OscInbox:
    """A UDP socket read on its own thread; messages queued as (address, args, sender)."""

    def __init__(self, host: str, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # room for a burst (a slider dragged, a patch's loadbang): the kernel's default ~200 KB
        # holds ~250 small datagrams, the rest of a burst would be lost (capped at rmem_max)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        self.socket.bind((host, port))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.messages: queue.Queue[Inbound] = queue.Queue(maxsize=QUEUE_MESSAGES)
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
                parsed = parse_datagram(data)
            except Exception as err:  # a python-osc failure parse_datagram does not know yet
                log.exception("parsing an OSC datagram of %d bytes", len(data))
                parsed = [(None, f"not an OSC packet ({len(data)} bytes: "
                                 f"{type(err).__name__}: {err})")]
            for item in ((address, args, sender, now) for address, args in parsed):
                try:
                    self.messages.put_nowait(item)
                except queue.Full:
                    log.warning("OSC inbox full: dropped %s", item[0])


def parse_datagram(data: bytes) -> list[tuple[str | None, Any]]:
    """One UDP datagram → [(address, arguments)] of the messages in it (a bundle's, in order);
    [(None, what was wrong)] when it is not OSC. Raises nothing else for any bytes (fuzzed:
    tests/test_fuzz_properties.py, fuzz/fuzz_osc.py)."""
    try:
        if data.startswith(BUNDLE):
            check_bundle(data)
        return [(m.message.address, list(m.message.params)) for m in OscPacket(data).messages]
    except (ParseError, ValueError, IndexError) as err:
        return [(None, f"not an OSC packet ({len(data)} bytes: {err})")]


def check_bundle(data: bytes) -> None:
    """Walk a bundle's element sizes before python-osc does; ParseError for an element that
    does not fit, is neither a message nor a bundle, or nests over MAX_BUNDLE_DEPTH.

    python-osc 1.10 loops forever on an element of negative size (its index walks back, found
    by fuzz/fuzz_osc.py), recurses once per nested bundle, and logs a warning per unknown
    element; a datagram passing this check does none of that.
    """
    pending = [(data, 1)]
    while pending:
        bundle, depth = pending.pop()
        if depth > MAX_BUNDLE_DEPTH:
            raise ParseError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        index = len(BUNDLE) + 8  # the time tag
        while index < len(bundle):
            size = int.from_bytes(bundle[index:index + 4], "big", signed=True)
            element = bundle[index + 4:index + 4 + size]
            if index + 4 > len(bundle) or size < 0 or len(element) != size:
                raise ParseError(f"bundle element at byte {index} of {len(bundle)}: size "
                                 f"{size} does not fit")
            if element.startswith(BUNDLE):
                pending.append((element, depth + 1))
            elif not element.startswith(b"/"):
                raise ParseError(f"bundle element at byte {index} is neither a message nor a "
                                 "bundle")
            index += 4 + size
