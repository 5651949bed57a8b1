"""Helpers of the realtime server benchmark: processes, one job seen from its client, summaries.

`serve_process` starts a real `continuo serve` (the default model) and `busy_core` a Python busy
loop that keeps one core busy; both are killed on exit. `run_job` plays one job from its own
client, timing each chunk's arrival (monotonic seconds) against its due time: chunk i is due at
(arrival of chunk 0) + start_sample / sample_rate, as for a client that starts playback the
moment chunk 0 arrives. A `Knob` turns the temperature at random moments while a job plays and
times each change until the first chunk whose header carries it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuo.bridge.client import Client, ServerError, ServerGone

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Served:
    endpoint: str
    pid: int
    log: Path


@contextmanager
def serve_process(folder: Path, clip_root: Path, threads: int, *extra: str) -> Iterator[Served]:
    """`continuo serve` (preset realtime) on a free loopback port, ready for jobs."""
    folder.mkdir(parents=True, exist_ok=True)
    endpoint, log = f"tcp://127.0.0.1:{free_port()}", folder / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as a user runs it
    env.update(PYTHONUNBUFFERED="1", OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"))
    argv = [sys.executable, "-m", "continuo.server.cli", "serve", "--preset", "realtime",
            "--threads", str(threads), "--bind", endpoint, "--clip-root", str(clip_root),
            "--out", str(folder / "jobs"), *extra]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(endpoint, process, log)
        yield Served(endpoint, process.pid, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n"
                               f"{log.read_text(errors='replace')}")
        try:
            with Client(endpoint, timeout_s=2.0, name="bench-probe") as probe:
                probe.hello()
            return
        except ServerGone:
            continue
    raise RuntimeError(f"server did not answer within {START_TIMEOUT_S:g} s:\n"
                       f"{log.read_text(errors='replace')}")


@contextmanager
def busy_core() -> Iterator[int]:
    """A second process that keeps one core busy (a Python busy loop); → its pid."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def rss_kib(pid: int) -> int:
    """A process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every `every_s` on a thread: samples = [(monotonic s, KiB)]."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), rss_kib(self.pid)))
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system, all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent running this machine's processes since boot (/proc/stat:
    user, nice, system, irq, softirq; not idle, iowait or time stolen by the hypervisor)."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used while it is open: by the server (`server_s`) and by every process that
    is not the server, the busy loop or this one (`others_s`), over `wall_s`."""

    def __init__(self, server_pid: int, load_pid: int) -> None:
        self.pids = (server_pid, load_pid, os.getpid())
        self.server_s = self.others_s = self.wall_s = 0.0

    def _read(self) -> tuple[float, float, float, float]:
        server, load, me = (cpu_s(pid) for pid in self.pids)
        return time.monotonic(), machine_busy_s(), server, load + me

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, server, ours = (b - a for a, b in zip(self._start, self._read(), strict=True))
        self.wall_s, self.server_s = wall, server
        self.others_s = max(0.0, busy - server - ours)


class Knob:
    """A performer turning the temperature: a `param` at a random moment (`gap_s` after the
    previous change was heard, the first once `start_audio_s` of audio has arrived), `repeats`
    times. Two latencies from sending it: to the first chunk whose header `params` carries the
    new value (`header_s`), and to the first chunk at or after the `from_chunk` the server's
    `accepted` names, the first it generates with them (`from_chunk_s`). `early` counts chunks
    whose header carried the new value before from_chunk (made with the old one)."""

    def __init__(self, rng: random.Random, repeats: int = 12, start_audio_s: float = 1.0,
                 gap_s: tuple[float, float] = (0.5, 1.5)) -> None:
        self.rng, self.repeats, self.start_audio_s, self.gap_s = rng, repeats, start_audio_s, gap_s
        self.header_s: list[float] = []
        self.from_chunk_s: list[float] = []
        self.early = 0
        self._turn_at: float | None = None
        self._pending: dict[str, Any] | None = None  # value, sent, from_chunk, header_s

    def timeout_s(self, now: float) -> float | None:
        """How long the client may wait for a message before the knob must turn."""
        return None if self._turn_at is None else max(0.0, self._turn_at - now)

    def turn_if_due(self, client: Client, job: str) -> None:
        if self._turn_at is None or time.monotonic() < self._turn_at:
            return
        value = round(0.6 + 0.02 * (len(self.from_chunk_s) % 20), 2)
        self._turn_at, sent = None, time.monotonic()
        accepted = client.param(job=job, params={"temperature": value})
        self._pending = {"value": value, "sent": sent, "from_chunk": accepted["from_chunk"],
                         "header_s": None}

    def heard(self, header: dict[str, Any], audio_s: float, now: float) -> None:
        """A chunk arrived at `now`, after `audio_s` of the job's audio in all."""
        pending = self._pending
        if pending is None:
            if self._turn_at is None and not self.from_chunk_s and audio_s >= self.start_audio_s:
                self._arm(now)
            return
        if pending["header_s"] is None and header["params"].get("temperature") == pending["value"]:
            pending["header_s"] = now - pending["sent"]
            self.early += header["index"] < pending["from_chunk"]
        if header["index"] >= pending["from_chunk"]:
            self.from_chunk_s.append(now - pending["sent"])
            self.header_s.append(pending["header_s"] if pending["header_s"] is not None
                                 else float("nan"))
            self._pending = None
            self._arm(now)

    def _arm(self, now: float) -> None:
        if len(self.from_chunk_s) < self.repeats:
            self._turn_at = now + self.rng.uniform(*self.gap_s)


@dataclass(frozen=True)
class JobSpec:
    chunk_beats: float
    bars: int | None  # None: a loop job, stopped after stop_after_s
    tempo: float = 120.0
    meter: str = "4/4"
    clip: str = "clip.flac"
    seed: int = 0
    stop_after_s: float | None = None


@dataclass
class JobRun:
    """One job as its client saw it: arrivals [(monotonic s, start_sample, n_samples)]."""

    first_chunk_s: float
    sample_rate: int
    arrivals: list[tuple[float, int, int]]
    done: dict[str, Any]
    knob: Knob | None = None

    @property
    def lateness_s(self) -> list[float]:
        """arrival − due of every chunk after the first (> 0: late)."""
        t0 = self.arrivals[0][0]
        return [t - (t0 + start / self.sample_rate) for t, start, _ in self.arrivals[1:]]

    @property
    def late_chunks(self) -> int:
        return sum(late > 0 for late in self.lateness_s)

    @property
    def audio_s(self) -> float:
        return sum(n for _, _, n in self.arrivals) / self.sample_rate

    def chunk_fractions(self) -> list[float]:
        """Inter-arrival time / chunk duration of each chunk after the first: the per-chunk
        generation time as a fraction of the chunk's length when the server is unpaced."""
        pairs = zip(self.arrivals, self.arrivals[1:], strict=False)
        return [(b[0] - a[0]) / (b[2] / self.sample_rate) for a, b in pairs]


def run_job(endpoint: str, spec: JobSpec, knob: Knob | None = None,
            start: threading.Barrier | None = None) -> JobRun:
    """Play one job from a client of its own; `start`: wait there before sending generate."""
    with Client(endpoint, timeout_s=30.0, name="bench") as client:
        client.hello()
        if start is not None:
            start.wait()
        sent = time.monotonic()
        accepted = client.generate(clip=spec.clip, tempo=spec.tempo, meter=spec.meter,
                                   bars=spec.bars, chunk_beats=spec.chunk_beats, seed=spec.seed,
                                   params={"temperature": 0.7}, loop=spec.bars is None)
        arrivals, done = _consume(client, accepted["job"], accepted["sample_rate"], spec, knob)
    return JobRun(arrivals[0][0] - sent, accepted["sample_rate"], arrivals, done, knob)


def _consume(client: Client, job: str, rate: int, spec: JobSpec,
             knob: Knob | None) -> tuple[list[tuple[float, int, int]], dict[str, Any]]:
    arrivals: list[tuple[float, int, int]] = []
    samples = 0
    while True:
        event = client.recv(timeout_s=None if knob is None else knob.timeout_s(time.monotonic()))
        now = time.monotonic()
        if event is None or event.kind == "heartbeat":
            if knob is not None:
                knob.turn_if_due(client, job)
            continue
        if event.kind == "error":
            raise ServerError.from_header(event.header)
        if event.kind == "done" and event.job == job:
            return arrivals, event.header
        if event.kind != "chunk" or event.job != job:
            continue
        arrivals.append((now, event.header["start_sample"], event.header["n_samples"]))
        samples += event.header["n_samples"]
        if knob is not None:
            knob.heard(event.header, samples / rate, now)
            knob.turn_if_due(client, job)
        if spec.stop_after_s is not None and now - arrivals[0][0] >= spec.stop_after_s:
            return arrivals, client.stop(job=job)[0]


def median_max(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (float("nan"),) * 2
