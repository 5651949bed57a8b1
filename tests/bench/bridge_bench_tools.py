"""Helpers of the bridge benchmark: OSC replies with their arrival times, a performer pressing
the pad over and over, the same requests from a plain client, the device's reported latency.

Every time here is `time.perf_counter()` (CLOCK_MONOTONIC on Linux, the clock the bridge reports
against), in seconds.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from bridge_fixtures import BridgeProcess, Replies
from server_bench_tools import cpu_s, machine_busy_s

from continuo.bridge.client import Client, ServerError

TEMPO, BARS, CLIP = 120.0, 2, "clip.flac"


class TimedReplies(Replies):
    """`Replies` that also keeps each message's arrival time: `log` = [(s, address, args)];
    `wait_next` blocks on a condition (no polling) until a matching message comes."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, list[Any]]] = []
        self._arrived = threading.Condition()
        super().__init__()

    def _received(self, now: float, messages: list[tuple[str, list[Any]]]) -> None:
        with self._arrived:
            super()._received(now, messages)
            self.log.extend((now, address, args) for address, args in messages)
            self._arrived.notify_all()

    def since(self, mark: int, address: str) -> list[tuple[float, list[Any]]]:
        with self._arrived:
            return [(t, args) for t, a, args in self.log[mark:] if a == address]

    def wait_next(self, address: str, mark: int, timeout_s: float) -> tuple[float, list[Any]]:
        """The first `address` message at or after log position `mark`: (arrival s, args)."""
        deadline = time.perf_counter() + timeout_s
        with self._arrived:
            while True:
                for t, a, args in self.log[mark:]:
                    if a == address:
                        return t, args
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise AssertionError(f"no {address} within {timeout_s:g} s; last replies "
                                         f"{[(a, args) for _, a, args in self.log[-8:]]}")
                self._arrived.wait(left)


@dataclass(frozen=True)
class Trigger:
    """One press of the pad: the bridge's own trigger-to-sound (OSC arrival → first sample at
    the DAC), and from the sender's side send → `/continuo/chunk` of chunk 0 and send →
    `/continuo/playing` received."""

    job: str
    reported_s: float
    chunk0_s: float
    playing_s: float
    beat: float


def press_pad(bridge: BridgeProcess, replies: TimedReplies, timeout_s: float = 20.0) -> Trigger:
    """Send /continuo/generate; wait for its /continuo/playing (and error out on an error)."""
    mark = len(replies.log)
    sent = time.perf_counter()
    bridge.send("/continuo/generate", CLIP, TEMPO, BARS)
    arrived, (job, latency_s, beat) = replies.wait_next("/continuo/playing", mark, timeout_s)
    errors = replies.since(mark, "/continuo/error")
    assert not errors, f"bridge replied with errors: {errors}"
    chunk0 = [t for t, args in replies.since(mark, "/continuo/chunk")
              if args[3] == 0 and f"/{job}/" in args[0]]
    assert chunk0, f"no /continuo/chunk of chunk 0 of {job} before its /continuo/playing"
    return Trigger(job, float(latency_s), chunk0[0] - sent, arrived - sent, float(beat))


def perform(bridge: BridgeProcess, replies: TimedReplies, triggers: int, rng: random.Random,
            gap_s: tuple[float, float] = (0.3, 1.0)) -> list[Trigger]:
    """`triggers` presses, each `gap_s` (uniform) after the previous one was heard: every
    press preempts a job that is still playing."""
    presses = []
    for _ in range(triggers):
        presses.append(press_pad(bridge, replies))
        time.sleep(rng.uniform(*gap_s))
    return presses


def client_presses(endpoint: str, chunk_beats: float, triggers: int, rng: random.Random,
                   gap_s: tuple[float, float] = (0.3, 1.0)) -> list[float]:
    """The bridge's request from a plain client of its own, with the same preemption pattern:
    generate → first chunk received (seconds), `triggers` times, each `gap_s` after the previous
    first chunk while that job streams on; its last job is stopped."""
    firsts = []
    with Client(endpoint, timeout_s=30.0, name="bench-baseline") as client:
        client.hello()
        for _ in range(triggers):
            sent = time.perf_counter()
            job = client.generate(clip=CLIP, tempo=TEMPO, bars=BARS, chunk_beats=chunk_beats,
                                  track="main")["job"]
            while True:
                event = client.recv(timeout_s=30.0)
                assert event is not None, f"no first chunk of {job} within 30 s"
                if event.kind == "error":
                    raise ServerError.from_header(event.header)
                if event.kind == "chunk" and event.job == job:
                    firsts.append(time.perf_counter() - sent)
                    break
            _drain(client, rng.uniform(*gap_s))
        client.stop(track="main")
    return firsts


def _drain(client: Client, seconds: float) -> None:
    """Take the server's messages for `seconds` (the job streams on meanwhile)."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        event = client.recv(timeout_s=left)
        if event is not None and event.kind == "error":
            raise ServerError.from_header(event.header)


def device_latency_s(env: dict[str, str], samplerate: int = 48_000) -> dict[str, float]:
    """PortAudio's output latency (seconds) on the device `env` selects, for latency 'low' and
    'high', stereo float32 as the bridge opens it (in a subprocess: PortAudio picks the JACK
    server when sounddevice is imported)."""
    code = ("import json, sounddevice as sd\n"
            "out = {}\n"
            "for name in ('low', 'high'):\n"
            f"    s = sd.OutputStream(samplerate={samplerate}, channels=2, dtype='float32',"
            " latency=name)\n"
            "    out[name] = float(s.latency); s.close()\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, 95th percentile (linear), max)."""
    return statistics.median(values), float(np.percentile(values, 95)), max(values)


class CoreShares:
    """Cores each named process used while open (CPU seconds / wall seconds), and `others`:
    every other process on the machine (jackd, other people's work)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cores: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {"wall": time.perf_counter(), "machine": machine_busy_s(),
                **{name: cpu_s(pid) for name, pid in self.pids.items()}}

    def __enter__(self) -> CoreShares:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        wall = end["wall"] - self._start["wall"]
        used = {k: (end[k] - self._start[k]) / wall for k in end if k != "wall"}
        named = sum(v for k, v in used.items() if k != "machine")
        self.cores = {**{k: v for k, v in used.items() if k != "machine"},
                      "others": max(0.0, used["machine"] - named)}

    def __str__(self) -> str:
        return ", ".join(f"{name} {share:.2f}" for name, share in self.cores.items())
