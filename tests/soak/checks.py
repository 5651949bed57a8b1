"""What the soak measures and checks: the server process over time, and the recordings after.

`Monitor` samples, every `every_s` on a thread of its own, the server's RSS (/proc/PID/status
VmRSS) and open file descriptors (/proc/PID/fd), asks it `status` from a client of its own
(running jobs, how long the answer took); and it counts the CPU seconds the server and every
other process used (the load the machine carried besides the soak) and the seconds the server's
threads waited for a CPU. `flatness` says how far the samples after
the warm-up stray from their reference. `check_recordings` reads every recording the server
wrote: the sidecar's end reason is set (and is the one its performer expected), its chunk count
matches the WAV's length by the job's chunk plan, and soundfile reads the WAV: finite samples,
not silent.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from bench.server_bench_tools import cpu_s, machine_busy_s, rss_kib

from continuo.bridge.client import Client
from continuo.server.engine.chunks import ChunkPlan

SILENT_PEAK = 1e-4  # a recording whose peak is below this is silent
REFERENCE_SAMPLES = 5  # flatness reference: the median of the first samples after warm-up


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> Counter:
    """The process's open fds by what they are: a file's path, or its kind ("socket", "pipe",
    "anon_inode:[eventfd]", ...)."""
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        kinds[link.split(":[", 1)[0] if link.endswith("]") and ":[" in link
              and not link.startswith("anon_inode") else link] += 1
    return kinds


def client_connections(pid: int, port: int) -> int:
    """The process's open TCP sockets on local port `port` (each a client's connection to it),
    from the socket inodes of /proc/PID/fd and the table in /proc/net/tcp."""
    ours = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":  # not LISTEN
            ours.add(fields[9])
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            continue
    return sum(link.startswith("socket:[") and link[8:-1] in ours for link in links)


def cpu_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (the kernel's
    run-queue delay, /proc/PID/task/*/schedstat): how much the machine's load held it back."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return total_ns / 1e9


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the monitor started
    rss_kib: int
    fds: int
    jobs: int  # running, as `status` says
    connections: int  # clients' TCP connections the server holds
    status_s: float  # how long `status` took to answer

    @property
    def fixed_fds(self) -> int:
        """Open fds less one per running job (its WAV) and per client connection."""
        return self.fds - self.jobs - self.connections


class Monitor:
    """Samples the server every `every_s` on a thread; see the module doc. Use as a context
    manager."""

    def __init__(self, pid: int, endpoint: str, every_s: float) -> None:
        self.pid, self.endpoint, self.every_s = pid, endpoint, every_s
        self.port = int(endpoint.rsplit(":", 1)[1])
        self.samples: list[Sample] = []
        self.problems: list[str] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)
        self._start = time.monotonic()
        self._cpu_start = (machine_busy_s(), cpu_s(pid), cpu_s(os.getpid()), cpu_wait_s(pid))
        self.server_cpu_s = self.other_cpu_s = self.server_wait_s = 0.0

    def _run(self) -> None:
        try:
            with Client(self.endpoint, timeout_s=30.0, name="soak-monitor") as client:
                while not self._halt.is_set():
                    asked = time.monotonic()
                    jobs = len(client.status()["jobs"])
                    answered = time.monotonic()
                    self.samples.append(Sample(
                        answered - self._start, rss_kib(self.pid), open_fds(self.pid), jobs,
                        client_connections(self.pid, self.port), answered - asked))
                    while (left := asked + self.every_s - time.monotonic()) > 0:
                        client.recv(timeout_s=left)  # heartbeats; keeps the client alive
        except Exception as err:  # the soak fails on it
            self.problems.append(f"monitor: {type(err).__name__}: {err}")

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(60)
        busy, server, me = machine_busy_s(), cpu_s(self.pid), cpu_s(os.getpid())
        self.server_cpu_s = server - self._cpu_start[1]
        self.server_wait_s = max(0.0, cpu_wait_s(self.pid) - self._cpu_start[3])
        self.other_cpu_s = max(0.0, busy - self._cpu_start[0] - self.server_cpu_s
                               - (me - self._cpu_start[2]))

    @property
    def wall_s(self) -> float:
        return self.samples[-1].t_s if self.samples else 0.0


@dataclass(frozen=True)
class Flatness:
    """Samples after the warm-up against their reference (the median of the first few)."""

    reference: float
    end: float
    max_deviation: float  # the largest |sample − reference|
    tolerance: float

    @property
    def flat(self) -> bool:
        return self.max_deviation <= self.tolerance


def flatness(values: list[float], tolerance: float, tolerance_pct: float = 0.0) -> Flatness:
    """The tolerance is the larger of `tolerance` and `tolerance_pct` % of the reference."""
    if len(values) < REFERENCE_SAMPLES + 1:
        raise ValueError(f"{len(values)} samples after warm-up: too few to judge flatness")
    reference = statistics.median(values[:REFERENCE_SAMPLES])
    return Flatness(reference, values[-1], max(abs(v - reference) for v in values),
                    max(tolerance, tolerance_pct / 100 * reference))


@dataclass
class RecordingCheck:
    """Every recording of a soak, checked; `problems` says what was wrong."""

    recordings: int = 0
    with_audio: int = 0  # recordings of at least one chunk
    audio_s: float = 0.0
    chunks: int = 0
    misses: int = 0
    gradable_chunks: int = 0  # chunks that can be late: all but each job's first
    worst_late_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def miss_fraction(self) -> float:
        return self.misses / self.gradable_chunks if self.gradable_chunks else 0.0


def check_recordings(out_dir: Path, expected_ends: dict[str, str | None]) -> RecordingCheck:
    """Check every sidecar + WAV in `out_dir`; `expected_ends`: job → the reason it must have
    ended with (every job the performers started must have a recording, and no other)."""
    result = RecordingCheck()
    sidecars = {p.stem: p for p in out_dir.glob("*.json")}
    for job in sorted(set(expected_ends) - set(sidecars)):
        result.problems.append(f"job {job}: no recording in {out_dir}")
    for job in sorted(set(sidecars) - set(expected_ends)):
        result.problems.append(f"recording {sidecars[job]} of a job no performer started")
    for job, path in sorted(sidecars.items()):
        problem = _check_one(path, expected_ends.get(job), result)
        if problem:
            result.problems.append(f"{path.name}: {problem}")
    return result


def _check_one(sidecar: Path, expected_end: str | None, result: RecordingCheck) -> str | None:
    meta = json.loads(sidecar.read_text())
    result.recordings += 1
    reason = meta.get("reason")
    result.reasons[str(reason)] = result.reasons.get(str(reason), 0) + 1
    if reason is None or reason != expected_end:
        return f"ended {reason!r}, expected {expected_end!r}"
    plan = ChunkPlan.of(meta["tempo"], meta["meter"], meta["chunk_beats"], meta["sample_rate"])
    chunks, samples = meta["chunks"], meta["samples"]
    if samples != plan.start_sample(chunks):
        return f"{chunks} chunks by the plan are {plan.start_sample(chunks)} samples, not {samples}"
    wav = sidecar.with_suffix(".wav")
    info = sf.info(str(wav))
    if info.frames != samples or info.samplerate != meta["sample_rate"] or info.channels != 1:
        return f"WAV holds {info.frames} frames at {info.samplerate} Hz, sidecar {samples}"
    audio, _ = sf.read(str(wav), dtype="float32")
    result.chunks += chunks
    result.misses += meta["misses"]
    result.gradable_chunks += max(0, chunks - 1)
    result.worst_late_s = max(result.worst_late_s, meta["worst_late_s"])
    result.audio_s += samples / meta["sample_rate"]
    if not np.isfinite(audio).all():
        return "non-finite samples"
    if chunks:
        result.with_audio += 1
        if np.abs(audio).max() < SILENT_PEAK:
            return f"silent (peak {np.abs(audio).max():.2e})"
    return None
