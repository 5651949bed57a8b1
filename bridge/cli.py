"""The `continuo-bridge` command: connects OSC (a DAW, Max/MSP, Pure Data) to a Continuo server.

Today it takes the `/continuo/...` OSC messages (see `continuo.bridge.osc`), drives the server,
writes each chunk as a WAV file and announces it over OSC, for hosts that import clips; audio
playback in tempo, MIDI and the patches come next (issue 7).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from continuo.server import __version__
from continuo.server.errors import ContinuoError
from continuo.server.transport.protocol import DEFAULT_ENDPOINT


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
    parser.add_argument("--no-audio", action="store_true",
                        help="only write chunk files and send OSC (playback is not built yet: "
                             "this is what the bridge does today)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    from continuo.bridge.bridge import Bridge, BridgeConfig

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bridge = Bridge(BridgeConfig(server=args.server, osc_host=args.osc_host,
                                     osc_port=args.osc_port, reply=args.reply,
                                     out_dir=args.out.resolve(),
                                     meter=args.meter, chunk_beats=args.chunk_beats))
    except (ContinuoError, OSError) as err:
        print(f"continuo-bridge: error: {err}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: bridge.stop())
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
