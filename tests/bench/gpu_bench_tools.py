"""Helpers of the GPU serving benchmark (tests/bench/test_gpu_bench.py): the paper-size model
folder, the engine in this process, and one scenario of concurrent jobs seen from its clients.

`paper_model(size)` builds, once, a model folder under runs/bench-paper-model/<size>/ with the
codec and semantic tokenizer of models/piano and three RANDOM-weight stages of that decoder size
(`paper`: 12 layers, 16 heads, d 1024, ff 4096), coarse and fine in the paper's flat layout,
saved as trained stages are (safetensors + stage record, float16 as exported), so the real
loading code reads them; and a preset `paper.toml` beside them. Speed does not depend on the
weights. The folder is rebuilt when its recipe (`RECIPE`, the size, the source tokenizers)
changes; it is written beside itself and renamed into place.

`Collector` is the engine's `send`: it unpacks each message's header and stamps its arrival
(monotonic seconds), per client. `run_scenario` starts n jobs at once (one client identity each)
through `Engine.generate`, the same call the ZeroMQ server makes, and waits for their `done`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from server_bench_tools import JobRun

from continuo.server.continuation import STAGE_FOLDERS
from continuo.server.engine.engine import Engine
from continuo.server.model.loading import KIND, new_stage, stage_to_dict
from continuo.server.training.checkpoint import file_sha256, save_model_folder
from continuo.server.training.token_cache import model_tokenizers
from continuo.server.transport.protocol import PROTOCOL_VERSION, Generate, unpack_header

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "models" / "piano"
CACHE = ROOT / "runs" / "bench-paper-model"
BANDWIDTH_KBPS = 6.0
RECIPE = 1  # bump when the folder's contents change
LAYOUTS = {"semantic": "flat", "coarse": "flat", "fine": "flat"}  # the paper's order
PRESET = """# The AudioLM paper's stage size, flat layout, RANDOM weights (a benchmark's model,
# tests/bench/gpu_bench_tools.py): the codec and semantic tokenizer of models/piano.
notes = "paper-size stages ({size}), flat layout, random weights: for speed measurements only"
model_dir = "{model_dir}"
bandwidth_kbps = {bandwidth:g}
context_s = 5.0
precision = "mixed"
seed = 0
"""


def _recipe(size: str) -> dict[str, Any]:
    return {"recipe": RECIPE, "size": size, "layouts": LAYOUTS, "bandwidth_kbps": BANDWIDTH_KBPS,
            "codec_sha256": file_sha256(SOURCE / "codec" / "config.json"),
            "semantic_sha256": file_sha256(SOURCE / "semantic" / "config.json")}


def paper_model(size: str = "paper", cache: Path = CACHE) -> Path:
    """The preset file of the benchmark's paper model of decoder `size` (paper/small/tiny),
    building its folder first unless it is there already with the same recipe."""
    folder = cache / size
    recipe = _recipe(size)
    marker = folder / "bench-model.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == recipe):
        _build(folder, size, recipe)
    return folder / "paper.toml"


def _build(folder: Path, size: str, recipe: dict[str, Any]) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        tmp.mkdir(parents=True)
        for part in ("codec", "semantic"):
            shutil.copytree(SOURCE / part, tmp / part)
        identity = model_tokenizers(SOURCE, BANDWIDTH_KBPS).identity
        for index, (name, layout) in enumerate(LAYOUTS.items()):
            torch.manual_seed(index)
            stage = new_stage(name, identity, size, layout)
            state = {k: v.half() if v.is_floating_point() else v
                     for k, v in stage.build_model().state_dict().items()}
            save_model_folder(tmp / STAGE_FOLDERS[name], state, KIND, stage_to_dict(stage),
                              {"stage": name, "random_weights": True, "stored_dtype": "float16",
                               "built_by": "tests/bench/gpu_bench_tools.py"})
        model_dir = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        (tmp / "paper.toml").write_text(PRESET.format(size=size, model_dir=model_dir,
                                                      bandwidth=BANDWIDTH_KBPS))
        (tmp / "bench-model.json").write_text(json.dumps(recipe, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Collector:
    """The engine's `send`: every message's header with its arrival time, per client."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.messages: dict[bytes, list[tuple[float, dict[str, Any]]]] = defaultdict(list)

    def send(self, client: bytes, frames: list[bytes]) -> None:
        header, now = unpack_header(frames[0]), time.monotonic()
        with self._cond:
            self.messages[client].append((now, header))
            if header["type"] == "done":
                self._cond.notify_all()

    def _done(self, client: bytes) -> bool:
        return any(h["type"] == "done" for _, h in self.messages[client])

    def wait_done(self, clients: list[bytes], timeout_s: float) -> None:
        """Until every client got its `done`; TimeoutError naming how many did not."""
        with self._cond:
            if not self._cond.wait_for(lambda: all(self._done(c) for c in clients), timeout_s):
                missing = sum(not self._done(c) for c in clients)
                raise TimeoutError(f"{missing} of {len(clients)} jobs not done after "
                                   f"{timeout_s:g} s")

    def job_run(self, client: bytes, sent: float) -> JobRun:
        """One client's job as it saw it (generate called at `sent`); RuntimeError on errors."""
        with self._cond:
            messages = list(self.messages[client])
        errors = [h for _, h in messages if h["type"] == "error"]
        if errors:
            raise RuntimeError(f"client {client!r}: {errors}")
        accepted = next(h for _, h in messages if h["type"] == "accepted")
        arrivals = [(t, h["start_sample"], h["n_samples"]) for t, h in messages
                    if h["type"] == "chunk"]
        done = next(h for _, h in messages if h["type"] == "done")
        first = arrivals[0][0] - sent if arrivals else float("nan")
        return JobRun(first, accepted["sample_rate"], arrivals, done)


@dataclass(frozen=True)
class JobsSpec:
    """What every job of a scenario plays: `bars` of `meter` at `tempo`, chunks of
    `chunk_beats`, continuing `clip` (under the engine's clip root)."""

    bars: int
    chunk_beats: float = 1.0
    tempo: float = 120.0
    meter: str = "4/4"
    clip: str = "clip.flac"

    @property
    def audio_s(self) -> float:
        beats = self.bars * int(self.meter.split("/")[0])
        return beats * 60.0 / self.tempo


@dataclass(frozen=True)
class Scenario:
    """n concurrent jobs: each as its client saw it (`runs`), the generate calls' start and
    the last `done`'s arrival (monotonic seconds), and the memory high-water mark in bytes."""

    preset: str
    runs: list[JobRun]
    started: float
    ended: float
    memory_bytes: int

    @property
    def n_jobs(self) -> int:
        return len(self.runs)

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    @property
    def first_s(self) -> list[float]:
        return [r.first_chunk_s for r in self.runs]

    @property
    def rtf(self) -> list[float]:
        """Worker seconds / audio seconds per job (the `done` header's realtime_factor)."""
        return [r.done["realtime_factor"] for r in self.runs]

    @property
    def speed(self) -> list[float]:
        """Audio seconds per wall second per job, from its generate call to its last chunk."""
        return [r.audio_s / (r.arrivals[-1][0] - (r.arrivals[0][0] - r.first_chunk_s))
                for r in self.runs]

    @property
    def kept_up(self) -> int:
        """Jobs that never fell behind: no server miss and no chunk late at its client."""
        return sum(r.done["misses"] == 0 and r.late_chunks == 0 for r in self.runs)

    @property
    def aggregate(self) -> float:
        """Audio seconds of all jobs per wall second of the scenario."""
        return sum(r.audio_s for r in self.runs) / self.wall_s


def run_scenario(engine: Engine, collector: Collector, preset: str, n_jobs: int,
                 spec: JobsSpec, timeout_s: float, memory: MemoryMeter) -> Scenario:
    """Start n_jobs jobs at once (seeds 0..n−1, one client each), wait for them all."""
    clients = [f"bench-{uuid.uuid4().hex[:8]}-{i}".encode() for i in range(n_jobs)]
    sent: dict[bytes, float] = {}
    with memory:
        started = time.monotonic()
        for seed, client in enumerate(clients):
            request = Generate(v=PROTOCOL_VERSION, seq=seed, clip=spec.clip, tempo=spec.tempo,
                               meter=spec.meter, bars=spec.bars, chunk_beats=spec.chunk_beats,
                               seed=seed)
            sent[client] = time.monotonic()
            engine.generate(client, request, None)
        collector.wait_done(clients, timeout_s)
    runs = [collector.job_run(c, sent[c]) for c in clients]
    ended = max(r.arrivals[-1][0] for r in runs if r.arrivals)
    return Scenario(preset, runs, started, ended, memory.peak_bytes)


class MemoryMeter:
    """The high-water mark of memory while open: on CUDA the tensors' (max_memory_allocated,
    reset on entry); on a CPU this process's resident set, sampled every `every_s`."""

    def __init__(self, device: torch.device, every_s: float = 0.25) -> None:
        self.device, self.every_s = device, every_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryMeter:
        self.peak_bytes = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            if self._stop.wait(self.every_s):
                return

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()


def memory_now_bytes(device: torch.device) -> int:
    """Memory in use now: the tensors' on CUDA, this process's resident set on a CPU."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss_bytes()


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores"


def stage_parameters(stages: dict[str, tuple[Any, Any]]) -> int:
    """The three stages' parameters as trained (counted on models built on the meta device:
    at a reduced precision the loaded Linears hold their weights as buffers)."""
    total = 0
    for stage, _ in stages.values():
        with torch.device("meta"):
            total += sum(p.numel() for p in stage.build_model().parameters())
    return total


def median_max(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)
