"""The bridge: OSC in, the server's chunks out as WAV files and OSC replies.

Two threads. `OscInbox` reads UDP datagrams, parses them with python-osc (`OscPacket`) and
queues (address, arguments, sender); a datagram that is not OSC is queued as an error for its
sender. The bridge loop (`Bridge.run`, one thread, which owns the ZeroMQ client) takes queued
messages, checks them (`osc.parse_message`), acts on them through the server, and turns the
server's events into replies: each chunk is written as `OUT/<job>/<index>.wav` (mono float32 at
the model's rate, for DAW or Max/Pd import) and announced with `/continuo/chunk`; a job's end
with `/continuo/done`; any problem with `/continuo/error`, never a crash. When the server stops
answering, the bridge reconnects by itself and says so with `/continuo/status`.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from pythonosc.osc_packet import OscPacket, ParseError
from pythonosc.udp_client import SimpleUDPClient

from continuo.bridge import osc
from continuo.bridge.client import Client, Event, ServerError, ServerGone
from continuo.server.errors import ContinuoError
from continuo.server.transport.protocol import DEFAULT_ENDPOINT

log = logging.getLogger(__name__)
Address = tuple[str, int]
MAX_DATAGRAM = 65_536


@dataclass(frozen=True)
class BridgeConfig:
    server: str = DEFAULT_ENDPOINT
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    reply: Address | None = None  # None: reply to each message's sender
    out_dir: Path = Path("outputs/bridge")
    meter: str = "4/4"
    chunk_beats: float = 1.0
    track: str = "main"
    timeout_s: float = 10.0


class OscInbox:
    """A UDP socket read on its own thread; messages queued as (address, args, sender)."""

    def __init__(self, host: str, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((host, port))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.messages: queue.Queue[tuple[str | None, Any, Address]] = queue.Queue(maxsize=1000)
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
            try:
                items = [(m.message.address, list(m.message.params), sender)
                         for m in OscPacket(data).messages]
            except (ParseError, ValueError, IndexError) as err:
                items = [(None, f"not an OSC packet ({len(data)} bytes: {err})", sender)]
            for item in items:
                try:
                    self.messages.put_nowait(item)
                except queue.Full:
                    log.warning("OSC inbox full: dropped %s", item[0])


@dataclass
class BridgeState:
    """What the bridge remembers between messages."""

    tempo: float = 120.0
    loop: bool = False
    preset: str | None = None
    job: str | None = None  # the running job on our track
    connected: bool = False
    reply_to: dict[str, Address] = field(default_factory=dict)  # job → who asked for it


class Bridge:
    """See the module doc. `run()` until `stop()`."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.state = BridgeState()
        self.inbox = OscInbox(config.osc_host, config.osc_port)
        self._senders: dict[Address, SimpleUDPClient] = {}
        self._stop = threading.Event()
        self._last_sender: Address | None = None
        self.client: Client | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.inbox.start()
        log.info("OSC on %s:%d, server %s", self.config.osc_host, self.inbox.port,
                 self.config.server)
        try:
            while not self._stop.is_set():
                if self.client is None:
                    self._connect()
                    continue
                try:
                    self._pump()
                except ServerGone as err:
                    log.warning("server gone: %s", err)
                    self._disconnect()
        finally:
            self._disconnect()
            self.inbox.close()

    # --- the loop -------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Handle queued OSC messages, then server events for up to 20 ms."""
        while True:
            try:
                address, args, sender = self.inbox.messages.get_nowait()
            except queue.Empty:
                break
            self._last_sender = sender
            if address is None:
                self._reply(sender, "/continuo/error", [args])
                continue
            try:
                self._command(osc.parse_message(address, args), sender)
            except ServerError as err:
                self._reply(sender, "/continuo/error", [f"{err.code.value}: {err.message}"])
            except ContinuoError as err:
                self._reply(sender, "/continuo/error", [str(err)])
        event = self.client.recv(0.02)
        if event is not None:
            self._event(event)

    def _command(self, command: osc.Command, sender: Address) -> None:
        state, client, config = self.state, self.client, self.config
        if isinstance(command, osc.Generate):
            state.tempo = command.tempo
            accepted = client.generate(clip=command.clip, tempo=command.tempo, bars=command.bars,
                                       meter=config.meter, chunk_beats=config.chunk_beats,
                                       preset=command.preset or state.preset, loop=state.loop,
                                       track=config.track)
            state.job = accepted["job"]
            state.reply_to[state.job] = sender
        elif isinstance(command, osc.Stop):
            client.stop(track=config.track)
        elif isinstance(command, osc.Param):
            client.param(track=config.track, params={command.name: command.value})
        elif isinstance(command, osc.Preset):
            state.preset = command.name
            if state.job is not None:
                client.param(track=config.track, preset=command.name)
        elif isinstance(command, osc.Tempo):
            state.tempo = command.bpm
        elif isinstance(command, osc.Loop):
            state.loop = command.on
        if isinstance(command, osc.Status | osc.Tempo | osc.Loop):
            self._status(sender)

    def _event(self, event: Event) -> None:
        header, state = event.header, self.state
        sender = state.reply_to.get(event.job or "", self._last_sender)
        if event.kind == "chunk":
            path = self.config.out_dir / header["job"] / f"{header['index']:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, event.pcm, header["sample_rate"], subtype="FLOAT")
            self._reply(sender, "/continuo/chunk", [str(path), int(header["bar"]),
                                                    float(header["beat"]), int(header["index"])])
        elif event.kind == "done":
            self._reply(sender, "/continuo/done", [header["job"], header["reason"],
                                                   header.get("recording", "")])
            state.reply_to.pop(header["job"], None)
            if state.job == header["job"]:
                state.job = None
        elif event.kind == "error":
            self._reply(sender, "/continuo/error", [f"{header['code']}: {header['message']}"])

    # --- connection and replies -----------------------------------------------------------------

    def _connect(self) -> None:
        try:
            client = Client(self.config.server, timeout_s=min(self.config.timeout_s, 2.0),
                            name="continuo-bridge")
            client.hello()
        except ServerGone:
            client.close()
            self._drain_while_away()
            return
        client.timeout_s = self.config.timeout_s
        self.client, self.state.connected = client, True
        log.info("connected to %s", self.config.server)
        self._status(self._last_sender, "connected")

    def _disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.state.connected:
            self.state.connected, self.state.job = False, None
            self._status(self._last_sender, "reconnecting")

    def _drain_while_away(self) -> None:
        """While the server is away: answer OSC with an error, wait a little."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                address, _, sender = self.inbox.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            self._last_sender = sender
            if address != osc.PREFIX + "status":
                self._reply(sender, "/continuo/error",
                            [f"no server at {self.config.server}; reconnecting"])
            self._status(sender)

    def _status(self, sender: Address | None, state: str | None = None) -> None:
        s = self.state
        word = state or ("connected" if s.connected else "reconnecting")
        self._reply(sender, "/continuo/status", [word, s.job or "", float(s.tempo), int(s.loop)])

    def _reply(self, sender: Address | None, address: str, args: list[Any]) -> None:
        target = self.config.reply or sender
        if target is None:
            return
        client = self._senders.get(target)
        if client is None:
            client = self._senders[target] = SimpleUDPClient(*target)
        try:
            client.send_message(address, args)
        except OSError as err:
            log.warning("could not reply %s to %s: %s", address, target, err)
