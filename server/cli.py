"""The `continuo` command: data, train, bench (and later serve, continue, eval, keys).

Each subcommand is one small function that declares its arguments and one that runs it; heavy
modules (torch, librosa, music21) are imported inside the runner so `continuo --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from continuo.server import __version__
from continuo.server.errors import ContinuoError

log = logging.getLogger("continuo")


# --- continuo data ------------------------------------------------------------------------------


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_cmd", required=True
    )

    p = data.add_parser("piano", help="render the music21 corpus to piano audio (24 kHz mono)")
    p.add_argument("out", type=Path, help="output folder (audio files + manifest.json)")
    p.set_defaults(func=_run_data_piano)

    p = data.add_parser("folder", help="segment and resample a folder of your own audio")
    p.add_argument("src", type=Path, help="folder of WAV/FLAC/OGG files (searched recursively)")
    p.add_argument("out", type=Path, help="output folder (audio files + manifest.json)")
    p.set_defaults(func=_run_data_folder)


def _run_data_piano(args: argparse.Namespace) -> None:
    raise NotImplementedError("continuo data piano")


def _run_data_folder(args: argparse.Namespace) -> None:
    raise NotImplementedError("continuo data folder")


# --- continuo train -----------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train the codec, the semantic tokenizer, the stages")
    tsub = train.add_subparsers(dest="train_cmd", required=True)

    p = tsub.add_parser("codec", help="train the small codec on a data folder (resumes)")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.set_defaults(func=_run_train_codec)

    p = tsub.add_parser("semantic", help="fit the semantic tokenizer's k-means on a data folder")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.set_defaults(func=_run_train_semantic)


def _run_train_codec(args: argparse.Namespace) -> None:
    raise NotImplementedError("continuo train codec")


def _run_train_semantic(args: argparse.Namespace) -> None:
    raise NotImplementedError("continuo train semantic")


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continuo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"continuo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except ContinuoError as err:
        print(f"continuo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("continuo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
