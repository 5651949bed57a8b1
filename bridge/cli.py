"""The `continuo-bridge` command: connects OSC (a DAW, Max/MSP, Pure Data) and MIDI to a
Continuo server, and plays the continuation in tempo.

It takes the `/continuo/...` OSC messages (see `continuo.bridge.osc`) and, with --midi, a
controller on a virtual MIDI port (see `continuo.bridge.midimap`); drives the server; plays each
chunk on its bar of the chosen tempo clock (internal, MIDI clock, Ableton Link) on the audio
device; writes each chunk as a WAV file and announces it over OSC, for hosts that import clips.
Everything the user can get wrong here (a device, a port, a map) is a clear error, exit 2. With
no --device and no audio output to be had (no JACK server, no sound card), it plays as files only
(as with --no-audio) and says so.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from continuo.server import __version__
from continuo.server.errors import ContinuoError
from continuo.server.transport.protocol import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from continuo.bridge.clock import Clock
    from continuo.bridge.stage import Stage


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continuo-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"continuo-bridge {__version__}")
    parser.add_argument("--server", default=DEFAULT_ENDPOINT,
                        help=f"the server's ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--osc-host", default="127.0.0.1", help="OSC address to listen on")
    parser.add_argument("--osc-port", type=int, default=9000, help="OSC port (default 9000)")
    parser.add_argument("--reply", type=_address, metavar="HOST:PORT",
                        help="send every OSC reply here (default: back to each sender)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bridge"),
                        help="chunk WAVs go to OUT/<job>/<index>.wav (default outputs/bridge)")
    parser.add_argument("--meter", default="4/4", help="meter of generated jobs (default 4/4)")
    parser.add_argument("--chunk-beats", type=float, default=1.0,
                        help="chunk length in beats (default 1)")
    parser.add_argument("--tempo", type=float, default=120.0,
                        help="tempo of the internal clock until a generate or /continuo/tempo "
                             "sets it (default 120)")
    audio = parser.add_argument_group("playback")
    audio.add_argument("--no-audio", action="store_true",
                       help="no playback: only write chunk files and send OSC (for DAWs that "
                            "import clips)")
    audio.add_argument("--device", help="output device, name or index (default: the system's)")
    audio.add_argument("--samplerate", type=int, default=48_000, help="device rate (48000)")
    audio.add_argument("--latency", default="low",
                       help="device latency: low, high or seconds (default low)")
    audio.add_argument("--lead-ms", type=float, default=30.0,
                       help="a job starts at least this long after its first chunk arrives "
                            "(default 30; a device with large buffers may need more)")
    audio.add_argument("--quantize", choices=("bar", "beat", "none"), default="bar",
                       help="a job starts on the clock's next bar (default), beat, or at once")
    audio.add_argument("--clock", choices=("internal", "midi", "link"), default="internal",
                       help="tempo source: the bridge's own, MIDI clock on the --midi port, or "
                            "Ableton Link (pip install 'continuo[link]')")
    audio.add_argument("--quantum", type=float, default=4.0,
                       help="Link quantum in beats (default 4)")
    audio.add_argument("--input", nargs="?", const="default", metavar="DEVICE",
                       help="record this input device for /continuo/capture (live looping)")
    midi = parser.add_argument_group("MIDI")
    midi.add_argument("--midi", action="store_true",
                      help="open a virtual MIDI input port for a controller and MIDI clock")
    midi.add_argument("--midi-port", default="Continuo", help="its name (default Continuo)")
    midi.add_argument("--midi-api", choices=("auto", "jack", "alsa"), default="auto",
                      help="MIDI system (default: JACK if a JACK server runs, else ALSA)")
    midi.add_argument("--midi-map", type=Path,
                      help="controller map (TOML: CCs → parameters, notes → pads); MIDI learn "
                           "saves to it")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _parts(args: argparse.Namespace) -> dict:
    """Clock, MIDI port, stage and audio input, as the arguments ask (opened here, the edge)."""
    from time import perf_counter

    from continuo.bridge.clock import InternalClock

    parts: dict = {}
    clock = InternalClock(args.tempo, perf_counter())
    if args.clock == "midi":
        if not args.midi:
            raise ContinuoError("--clock midi needs --midi (the port the clock comes in on)")
        from continuo.bridge.clock import MidiClock

        clock = MidiClock()
    elif args.clock == "link":
        from continuo.bridge.link import LinkClock

        clock = LinkClock(args.tempo, quantum=args.quantum)
    parts["clock"] = clock
    if args.midi:
        from continuo.bridge.midi import MidiInput

        parts["midi"] = MidiInput(api=args.midi_api, port_name=args.midi_port,
                                  clock=clock if args.clock == "midi" else None)
    if not args.no_audio:
        from continuo.bridge.playback import PlaybackError

        try:
            parts["stage"] = _stage(args, clock)
        except PlaybackError as err:
            if args.device is not None:  # the device asked for: its absence is an error
                raise
            logging.getLogger(__name__).warning("%s: playing as files only (as with "
                                                "--no-audio)", err)
            parts["audio_lost"] = str(err)
    if args.input is not None:
        from continuo.bridge.capture import InputCapture

        device = None if args.input == "default" else args.input
        device = int(device) if device and device.isdigit() else device
        parts["capture"] = InputCapture(device=device, samplerate=args.samplerate)
        parts["capture"].start()
    return parts


def _stage(args: argparse.Namespace, clock: Clock) -> Stage:
    """The player on the audio device, started, on the stage; PlaybackError if it fails."""
    from continuo.bridge.playback import PlaybackError, Player
    from continuo.bridge.stage import Stage

    latency = args.latency if args.latency in ("low", "high") else float(args.latency)
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    player = Player(device=device, samplerate=args.samplerate, latency=latency,
                    lead_s=args.lead_ms / 1e3)
    try:
        player.start()
    except PlaybackError:
        player.close()
        raise
    return Stage(player, clock, args.quantize)


def main(argv: list[str] | None = None) -> int:
    from continuo.bridge.bridge import Bridge, BridgeConfig

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        parts = _parts(args)
        bridge = Bridge(BridgeConfig(server=args.server, osc_host=args.osc_host,
                                     osc_port=args.osc_port, reply=args.reply,
                                     out_dir=args.out.resolve(), meter=args.meter,
                                     chunk_beats=args.chunk_beats, tempo=args.tempo,
                                     midi_map=args.midi_map), **parts)
    except (ContinuoError, OSError, ValueError) as err:
        print(f"continuo-bridge: error: {err}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: bridge.stop())
    try:
        bridge.run()
    finally:
        for name in ("midi", "capture"):
            if name in parts:
                parts[name].close()
        if "stage" in parts:
            parts["stage"].player.close()
        parts["clock"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
