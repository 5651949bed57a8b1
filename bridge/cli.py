"""The `continuo-bridge` command: connects OSC, MIDI and playback to a Continuo server."""

from __future__ import annotations

import argparse
import sys

from continuo.server import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continuo-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"continuo-bridge {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("continuo-bridge: the OSC/MIDI bridge is not built yet (see the project's issues)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
