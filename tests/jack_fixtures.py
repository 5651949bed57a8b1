"""A private JACK server (dummy driver: no sound card) for tests that need an audio or MIDI
device. Use as a fixture: `from jack_fixtures import jack_server` in a test module; the fixture
yields the server's name, and `jack_env(name)` is the environment for a subprocess that must
use it (PortAudio and rtmidi pick the server named by $JACK_DEFAULT_SERVER)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest


def jack_env(name: str) -> dict[str, str]:
    return {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}


@pytest.fixture(scope="module")
def jack_server() -> Iterator[str]:
    """jackd -d dummy at 48 kHz with 256-frame periods, private to the test module."""
    name = f"continuo-test-{os.getpid()}-{time.monotonic_ns() % 100_000}"
    process = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.5)
    if process.poll() is not None:
        raise RuntimeError(f"jackd exited: {process.stdout.read().decode(errors='replace')}")
    yield name
    process.terminate()
    process.wait(10)
