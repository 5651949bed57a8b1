"""Fuzzed OSC into a real bridge: whatever arrives (any address, any number of arguments of any
OSC type, garbage bytes, huge blobs), the bridge answers and keeps running; `parse_message`
never raises anything but OscError."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import pytest
from bridge_fixtures import BridgeProcess, Replies
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder
from server_fixtures import ServerProcess, server  # noqa: F401 (fixture)

from continuo.bridge import osc

pytestmark = pytest.mark.timeout(240)

ADDRESSES = [osc.PREFIX + name for name in osc.SIGNATURES] + ["/continuo", "/continuo/",
                                                             "/other", "/continuo/generate/x"]
ARGS = st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32, allow_nan=True),
                 st.text(max_size=40), st.binary(max_size=64), st.booleans(), st.none())


@settings(max_examples=400, deadline=None)
@given(address=st.sampled_from(ADDRESSES) | st.text(max_size=30),
       args=st.lists(ARGS, max_size=6))
def test_parse_message_takes_anything(address: str, args: list) -> None:
    try:
        command = osc.parse_message(address, args)
    except osc.OscError as err:
        assert str(err)
    else:
        assert type(command).__name__ in {t.__name__ for t in osc.Command.__args__}


def _message(rng: random.Random) -> bytes:
    builder = OscMessageBuilder(rng.choice(ADDRESSES))
    for _ in range(rng.randint(0, 5)):
        kind = rng.choice("ifsbTFN")
        value = {"i": rng.randint(-2**31, 2**31 - 1), "f": rng.uniform(-1e6, 1e6),
                 "s": rng.choice(["prompt.wav", "temperature", "", "x" * 5000, "ünï"]),
                 "b": rng.randbytes(rng.choice([1, 8, 60_000])), "T": True, "F": False,
                 "N": None}[kind]
        builder.add_arg(value, kind)
    return builder.build().dgram


def test_a_real_bridge_survives_fuzzed_datagrams(server: ServerProcess,  # noqa: F811
                                                   tmp_path: Path) -> None:
    replies = Replies()
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path, "--no-audio")
    rng = random.Random(7)
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for i in range(300):
                data = _message(rng) if i % 10 else rng.randbytes(rng.randint(0, 2000))
                if len(data) < 65_000:
                    raw.sendto(data, ("127.0.0.1", bridge.port))
        bridge.send("/continuo/stop")  # whatever the fuzz started
        bridge.send("/continuo/loop", 0)
        bridge.send("/continuo/tempo", 77.25)  # a marker: its status reply comes after the stop
        deadline = time.monotonic() + 60
        while not any(a == "/continuo/status" and args[2] == 77.25
                      for a, args in list(replies.messages)):
            assert time.monotonic() < deadline, replies.messages[-8:]
            time.sleep(0.05)
        last = len(replies.messages)
        bridge.send("/continuo/generate", "prompt.wav", 120.0, 1)  # still serving
        deadline = time.monotonic() + 60
        while not (finished := [args for a, args in replies.messages[last:]
                                if a == "/continuo/done" and args[1] == "finished"]):
            assert time.monotonic() < deadline, (replies.messages[last:][-8:],
                                                 bridge.log.read_text()[-3000:])
            time.sleep(0.05)
        assert bridge.process.poll() is None, bridge.log.read_text()
    finally:
        code = bridge.close()
        replies.close()
    assert code == 0, bridge.log.read_text()
    assert finished
    errors = replies.of("/continuo/error")
    assert len(errors) >= 100  # most of the fuzz is wrong and says so
    assert "Traceback" not in bridge.log.read_text()


def test_a_slider_flood_is_merged_not_rate_limited(server: ServerProcess,  # noqa: F811
                                                   tmp_path: Path) -> None:
    """A Max slider dragged fast: 1,000 /continuo/param in a burst reach the server as a few
    merged requests (never over its rate limit), and the last value is the one that holds."""
    replies = Replies()
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path, "--no-audio")
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        for i in range(1000):
            bridge.send("/continuo/param", "temperature", 0.5 + i / 1000)
        bridge.send("/continuo/param", "top_p", 0.9)
        deadline = time.monotonic() + 30
        while not any(a[0] == "top_p" for a in replies.of("/continuo/param")):
            assert time.monotonic() < deadline, replies.messages[-5:]
            time.sleep(0.05)
    finally:
        code = bridge.close()
        replies.close()
    assert code == 0, bridge.log.read_text()
    acks = replies.of("/continuo/param")
    temperatures = [a for a in acks if a[0] == "temperature"]
    assert len(temperatures) < 100, len(temperatures)  # merged (here: usually one request)
    assert temperatures[-1][1] == pytest.approx(1.499, abs=1e-6)  # OSC floats are float32
    assert acks[-1][0] == "top_p" and acks[-1][1:] == [pytest.approx(0.9), -1]
    assert not replies.of("/continuo/error"), replies.of("/continuo/error")[:3]
