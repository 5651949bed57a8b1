"""The bridge: OSC and MIDI in; the server's chunks out as sound in tempo, WAV files and OSC.

Threads. `inbox.OscInbox` reads UDP datagrams, parses them with python-osc (`OscPacket`) and queues
(address, arguments, sender, arrival time); a datagram that is not OSC is queued as an error for
its sender. The MIDI port (`midi.MidiInput`, optional) queues its messages the same way and feeds
MIDI clock to its clock. The bridge loop (`Bridge.run`, one thread, which owns the ZeroMQ client)
takes queued messages, checks them (`osc.parse_message`; MIDI through the controller map,
`midimap.command_for`), acts on them through the server, and turns the server's events into
sound and replies: each chunk goes on stage (`stage.Stage`: played on its bar of the tempo
clock; absent with --no-audio), is written as `OUT/<job>/<index>.wav` (mono float32 at the
model's rate, for DAW or Max/Pd import) and announced with `/continuo/chunk`; a job's first
sound with `/continuo/playing`, its end with `/continuo/done` and, once all of it has played,
`/continuo/played`; any problem with `/continuo/error`, never a crash. When the server stops
answering, the bridge reconnects by itself and says so with `/continuo/status`. When the audio
device goes (its JACK server quits) or could not be opened at start, the bridge plays on as with
--no-audio and says so: `/continuo/error` naming the device, and `/continuo/status` state
`no-audio` from then on (while connected).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import soundfile as sf
from pythonosc.udp_client import SimpleUDPClient

from continuo.bridge import osc
from continuo.bridge.client import Client, Event, ServerError, ServerGone
from continuo.bridge.clock import Clock, InternalClock, next_boundary_s
from continuo.bridge.inbox import Address, OscInbox
from continuo.bridge.stage import Stage
from continuo.server.engine.chunks import ChunkPlan
from continuo.server.errors import ContinuoError
from continuo.server.musical_time import Meter
from continuo.server.transport.protocol import DEFAULT_ENDPOINT

log = logging.getLogger(__name__)


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
    tempo: float = 120.0  # of the internal clock until /continuo/tempo or a generate sets it
    midi_map: Path | None = None  # the controller map; MIDI learn saves to it


@dataclass
class BridgeState:
    """What the bridge remembers between messages."""

    tempo: float = 120.0
    loop: bool = False
    preset: str | None = None
    job: str | None = None  # the running job on our track
    connected: bool = False
    reply_to: dict[str, Address] = field(default_factory=dict)  # job → who asked for it
    learning: str | None = None  # the parameter the next CC moved will control
    params: dict[str, float] = field(default_factory=dict)  # live parameters, for every job
    capture: tuple[float, float, Address | None, float] | None = None  # (from, to, who, when)


class Bridge:
    """See the module doc. `run()` until `stop()`. The stage, MIDI port, audio input and clock
    are made by the caller (`cli.py`) and handed in; any of them may be absent."""

    def __init__(self, config: BridgeConfig, stage: Stage | None = None,
                 clock: Clock | None = None, midi: Any = None, capture: Any = None,
                 audio_lost: str | None = None) -> None:
        self.config = config
        self.state = BridgeState(tempo=config.tempo)
        self.inbox = OscInbox(config.osc_host, config.osc_port)
        self.clock = clock or (stage.clock if stage else InternalClock(config.tempo,
                                                                       perf_counter()))
        self.stage, self.midi, self.capture = stage, midi, capture
        self._audio_lost, self._audio_told = audio_lost, False  # why there is no stage, if lost
        self.midi_map = None
        if midi is not None:
            from continuo.bridge.midimap import load_map

            self.midi_map = load_map(config.midi_map) if config.midi_map else load_map(None)
        self._senders: dict[Address, SimpleUDPClient] = {}
        self._stop = threading.Event()
        self._last_sender: Address | None = None
        self._knob_sender: Address | None = None  # who sent the merged parameter changes
        self.client: Client | None = None
        self._identity = f"continuo-bridge-{uuid.uuid4().hex[:12]}".encode()  # kept across
        # reconnects: jobs running on the server stay this bridge's

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.inbox.start()
        log.info("OSC on %s:%d, server %s", self.config.osc_host, self.inbox.port,
                 self.config.server)
        try:
            while not self._stop.is_set():
                self._check_audio()
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
        """Handle queued OSC and MIDI messages, a due capture, playback news, then server events
        for up to 10 ms. Parameter changes are merged (a knob turn or a Max slider sends dozens):
        one `param` request with each parameter's latest value, before the next other command
        or at the end of the pump, so the order of commands is kept."""
        knobs: dict[str, float] = {}
        while True:
            try:
                address, args, sender, arrived = self.inbox.messages.get_nowait()
            except queue.Empty:
                break
            self._last_sender = sender
            try:
                if address is None:
                    raise osc.OscError(args)
                command = osc.parse_message(address, args)
            except ContinuoError as err:
                self._reply(sender, "/continuo/error", [str(err)])
                continue
            self._take(command, sender, arrived, knobs)
        self._pump_midi(knobs)
        self._flush(knobs)
        if self.state.capture is not None and perf_counter() >= self.state.capture[1] + 0.05:
            start_s, end_s, sender, arrived = self.state.capture
            self.state.capture = None
            self._guarded(sender, arrived, self._loop_input, start_s, end_s, sender)
        if self.stage is not None:
            self._report_playback()
        event = self.client.recv(0.01)
        if event is not None:
            self._event(event)

    def _take(self, command: osc.Command | None, sender: Address | None, arrived: float,
              knobs: dict[str, float]) -> None:
        """A parameter change joins the merged ones; any other command flushes them, then acts."""
        if isinstance(command, osc.Param):
            knobs[command.name] = command.value
            self._knob_sender = sender
        elif command is not None:
            self._flush(knobs)
            self._guarded(sender, arrived, _given, command)

    def _flush(self, knobs: dict[str, float]) -> None:
        if knobs:
            self._guarded(self._knob_sender, perf_counter(), self._set_params, dict(knobs),
                          self._knob_sender)
            knobs.clear()

    def _check_audio(self) -> None:
        """The audio device gone (its JACK server quit): play on as with --no-audio; tell the
        musician once, as soon as there is someone to tell."""
        if self.stage is not None and (lost := self.stage.player.lost):
            log.warning("%s: playing on as files only (as with --no-audio)", lost)
            self.stage.player.close()  # leaves the dead stream be (see Player.close)
            self.stage, self._audio_lost, self._audio_told = None, lost, False
        sender = self.config.reply or self._last_sender
        if self._audio_lost and not self._audio_told and sender is not None:
            self._audio_told = True
            self._reply(sender, "/continuo/error", [f"audio: {self._audio_lost}; playing on "
                                                    "as files only (as with --no-audio)"])
            self._status(sender)

    def _guarded(self, sender: Address | None, arrived: float, make, *args: Any) -> None:
        """`make(*args)` a command (or do something, None) and act on it; any problem goes
        back to the sender as an error."""
        try:
            command = make(*args)
            if command is not None:
                self._command(command, sender, arrived)
        except ServerError as err:
            self._reply(sender, "/continuo/error", [f"{err.code.value}: {err.message}"])
        except ContinuoError as err:
            self._reply(sender, "/continuo/error", [str(err)])

    def _pump_midi(self, knobs: dict[str, float]) -> None:
        """Queued MIDI: learn, or act through the map (knob moves join `knobs`)."""
        if self.midi is None:
            return
        sender = self.config.reply or self._last_sender
        while True:
            try:
                message, arrived = self.midi.messages.get_nowait()
            except queue.Empty:
                return
            if self.state.learning and message.type == "control_change":
                self._guarded(sender, arrived, self._learn, message, sender)
                continue
            try:
                command = self._midi_command(message)
            except ContinuoError as err:
                self._reply(sender, "/continuo/error", [str(err)])
                continue
            self._take(command, sender, arrived, knobs)

    def _learn(self, message: Any, sender: Address | None) -> None:
        from continuo.bridge.midimap import learn, save_map

        param = self.state.learning
        self.midi_map = learn(self.midi_map, param, message.control, message.channel + 1)
        self.state.learning = None
        if self.config.midi_map is not None:
            save_map(self.midi_map, self.config.midi_map)
        self._reply(sender, "/continuo/learned", [param, int(message.control)])

    def _set_params(self, params: dict[str, float], sender: Address | None) -> None:
        """Live parameters: the running job's from its next chunk, and every later job's.
        Each is confirmed with /continuo/param s:name f:value i:from_chunk (-1: no job runs,
        the next one starts with it)."""
        self.state.params.update(params)
        from_chunk = -1
        if self.state.job is not None:
            from_chunk = int(self.client.param(track=self.config.track,
                                               params=params)["from_chunk"])
        for name, value in params.items():
            self._reply(sender, "/continuo/param", [name, float(value), from_chunk])

    def _midi_command(self, message: Any) -> osc.Command | None:
        from continuo.bridge.midimap import command_for

        command = command_for(message, self.midi_map, self._tempo())
        return osc.Loop(not self.state.loop) if isinstance(command, osc.Loop) else command

    def _tempo(self) -> float:
        """The tempo to play at: an external clock's while it runs, else the bridge's own."""
        if self.clock.name != "internal" and self.clock.beat_at(perf_counter()) is not None:
            return round(self.clock.bpm(), 2)
        return self.state.tempo

    def _command(self, command: osc.Command, sender: Address | None, arrived: float) -> None:
        state, client, config = self.state, self.client, self.config
        if isinstance(command, osc.Generate):
            tempo = self._tempo() if self.clock.name != "internal" else command.tempo
            self._set_tempo(tempo)
            self._start(sender, arrived, clip=command.clip, bars=command.bars,
                        preset=command.preset or state.preset, loop=state.loop)
        elif isinstance(command, osc.Stop):
            client.stop(track=config.track)
            if self.stage is not None:
                self.stage.stop()
        elif isinstance(command, osc.Param):
            self._set_params({command.name: command.value}, sender)
        elif isinstance(command, osc.Preset):
            known = [p["name"] for p in client.presets()["presets"]
                     if not p.get("notes", "").startswith("(invalid")]
            if command.name not in known:
                raise osc.OscError(f"/continuo/preset: unknown preset {command.name!r}; the "
                                   f"server has {', '.join(known)}")
            state.preset = command.name
            if state.job is not None:
                client.param(track=config.track, preset=command.name)
        elif isinstance(command, osc.Tempo):
            self._set_tempo(command.bpm)
        elif isinstance(command, osc.Loop):
            state.loop = command.on
        elif isinstance(command, osc.Learn):
            if self.midi is None:
                raise osc.OscError("/continuo/learn: no MIDI port (start continuo-bridge "
                                   "with --midi)")
            state.learning = command.name
        elif isinstance(command, osc.Capture):
            self._capture(command, sender, arrived)
        if isinstance(command, osc.Status | osc.Tempo | osc.Loop | osc.Learn):
            self._status(sender)

    def _set_tempo(self, bpm: float) -> None:
        self.state.tempo = bpm
        if isinstance(self.clock, InternalClock):
            self.clock.set_bpm(bpm, perf_counter())
        elif self.clock.name == "link":  # a proposal to the whole Link session
            self.clock.set_bpm(bpm)

    def _start(self, sender: Address | None, arrived: float, *, bars: int | None = None,
               loop: bool = False, **source: Any) -> None:
        """Start a job on our track (a clip or PCM) at the current tempo."""
        config = self.config
        accepted = self.client.generate(tempo=self.state.tempo, bars=bars, meter=config.meter,
                                        chunk_beats=config.chunk_beats, loop=loop,
                                        track=config.track, params=self.state.params or None,
                                        **source)
        job = self.state.job = accepted["job"]
        self.state.reply_to[job] = sender
        if self.stage is not None:
            self.stage.add(job, ChunkPlan.of(accepted["tempo"], accepted["meter"],
                                             accepted["chunk_beats"], accepted["sample_rate"],
                                             bars), arrived)

    def _capture(self, command: osc.Capture, sender: Address | None, arrived: float) -> None:
        """Live loop: continue the last `bars` bars in loop mode — of a file now, of the audio
        input at the clock's next bar line."""
        tempo = self._tempo()
        per_bar = float(Meter.parse(self.config.meter).quarter_beats_per_bar)
        seconds = command.bars * per_bar * 60 / tempo
        self._set_tempo(tempo)
        if command.source is not None:
            from continuo.bridge.capture import read_tail

            pcm, sr = read_tail(Path(command.source), seconds)
            self._start(sender, arrived, pcm=pcm, sr=sr, loop=True)
            return
        if self.capture is None:
            raise osc.OscError("/continuo/capture: no audio input (start continuo-bridge with "
                               "--input, or name a file to capture from)")
        now = perf_counter()
        beat = self.clock.beat_at(now)
        end_s = now if beat is None else next_boundary_s(beat, now, self.clock.bpm(), per_bar)
        self.state.capture = (end_s - seconds, end_s, sender, arrived)

    def _loop_input(self, start_s: float, end_s: float, sender: Address | None) -> None:
        pcm = np.asarray(self.capture.take(start_s, end_s), np.float32)
        self._start(sender, perf_counter(), pcm=pcm, sr=self.capture.rate, loop=True)

    def _report_playback(self) -> None:
        first, played = self.stage.poll()
        for job, latency_s, beat in first:
            self._reply(self.state.reply_to.get(job, self._last_sender), "/continuo/playing",
                        [job, float(latency_s), float(beat)])
        for p in played:
            self._reply(self.state.reply_to.pop(p.job, self._last_sender), "/continuo/played",
                        [p.job, p.chunks, p.late_samples, float(p.max_start_error_ms), p.timed,
                         p.underflows])

    def _event(self, event: Event) -> None:
        header, state = event.header, self.state
        sender = state.reply_to.get(event.job or "", self._last_sender)
        if event.kind == "chunk":
            job, index = header["job"], int(header["index"])
            if self.stage is not None:
                self.stage.chunk(job, index, event.pcm, header["sample_rate"])
            path = self.config.out_dir / job / f"{index:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, event.pcm, header["sample_rate"], subtype="FLOAT")
            self._reply(sender, "/continuo/chunk", [str(path), int(header["bar"]),
                                                    float(header["beat"]), index])
        elif event.kind == "done":
            self._reply(sender, "/continuo/done", [header["job"], header["reason"],
                                                   header.get("recording") or ""])
            if self.stage is None:
                state.reply_to.pop(header["job"], None)
            else:
                self.stage.ended(header["job"])
            if state.job == header["job"]:
                state.job = None
        elif event.kind == "error":
            self._reply(sender, "/continuo/error", [f"{header['code']}: {header['message']}"])

    # --- connection and replies -----------------------------------------------------------------

    def _connect(self) -> None:
        try:
            client = Client(self.config.server, timeout_s=min(self.config.timeout_s, 2.0),
                            name="continuo-bridge", identity=self._identity)
            client.hello()
        except ServerGone:
            client.close()
            self._drain_while_away()
            return
        client.timeout_s = self.config.timeout_s
        self.client, self.state.connected = client, True
        log.info("connected to %s", self.config.server)
        self._status(self._last_sender)

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
                address, _, sender, _ = self.inbox.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            self._last_sender = sender
            if address != osc.PREFIX + "status":
                self._reply(sender, "/continuo/error",
                            [f"no server at {self.config.server}; reconnecting"])
            self._status(sender)

    def _status(self, sender: Address | None, state: str | None = None) -> None:
        s = self.state
        word = state or ("reconnecting" if not s.connected
                         else "no-audio" if self._audio_lost else "connected")
        self._reply(sender, "/continuo/status", [word, s.job or "", float(self._tempo()),
                                                 int(s.loop)])

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


def _given(command: osc.Command) -> osc.Command:
    return command
