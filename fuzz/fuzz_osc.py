"""atheris target: what the bridge does with one UDP datagram — the inbox's parse
(`inbox.parse_datagram`, python-osc's OscPacket) and then each message's handler
(`osc.parse_message`). Only OscError may come out of the handler; the inbox never raises.

    .venv/bin/python fuzz/fuzz_osc.py CORPUS_DIR -max_total_time=60   (or: make fuzz)
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports():
    from continuo.bridge import osc
    from continuo.bridge.inbox import parse_datagram

logging.disable(logging.CRITICAL)  # python-osc logs a warning per odd bundle element


def test_one_input(data: bytes) -> None:
    for address, args in parse_datagram(data):
        if address is None:
            assert isinstance(args, str) and args.startswith("not an OSC packet"), args
            continue
        try:
            osc.parse_message(address, args)
        except osc.OscError as err:
            assert str(err)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
