"""Benchmark: GPU serving, many jobs at once (issue 9; `make bench-gpu`).

The server's engine (`Engine`, the code `continuo serve --device cuda` runs) in this process,
its messages collected by a `send` of our own (tests/bench/gpu_bench_tools.py), so the GPU's
memory counters are readable here. For each preset — `paper` (the AudioLM paper's stage size,
12 layers, 16 heads, d 1024, ff 4096, coarse and fine in the flat layout, RANDOM weights; built
once under runs/bench-paper-model/) and `realtime` (presets/realtime.toml: models/piano, delay
layout, small stages) — the model is loaded on the device and warmed up as the server does,
then 1, 4 and 16 jobs start at once, each continuing models/piano/clip.flac for 8 bars at
120 BPM (16 s of audio) in 1-beat chunks, paced as the server paces them (ahead_s 1.0).

Per scenario:
- first chunk: generate → chunk 0 (median / max over the jobs);
- RTF: worker seconds / audio seconds per job (the `done` header's realtime_factor; median /
  max) and audio seconds per wall second per job, generate → last chunk (× realtime, min);
- kept up: jobs with no server miss and no chunk late at the client (chunk i due at chunk 0's
  arrival + its start / rate): the realtime streams served; aggregate: all jobs' audio seconds
  per wall second;
- memory: torch.cuda.max_memory_allocated, reset per scenario (on a CPU: this process's peak
  resident set, sampled), and the device's name.

Targets (CUDA; asserted after everything is printed and written): the paper preset at RTF ≤ 0.5
for one job; all 16 realtime jobs kept up (≥ 16 concurrent realtime streams); first chunk ≤
200 ms for one job of either preset.

Without CUDA the test is skipped, unless CONTINUO_BENCH_DEVICE=cpu: then the same code runs on
the CPU at a reduced size (jobs 1 and 2, 2 bars, the paper preset's stages at the `small` size)
to prove the script; the targets are printed, not asserted. Settings (environment):
CONTINUO_BENCH_DEVICE (cuda, cuda:N or cpu), CONTINUO_BENCH_PAPER_SIZE (paper/small/tiny),
CONTINUO_BENCH_JOBS ("1,4,16"), CONTINUO_BENCH_BARS, CONTINUO_BENCH_PRESETS ("paper,realtime"),
CONTINUO_BENCH_SERVE_THREADS (torch threads, default 1 as `continuo serve`),
CONTINUO_BENCH_REPORT (the figures' file, default outputs/bench-gpu.md).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import torch
from gpu_bench_tools import (
    Collector,
    JobsSpec,
    MemoryMeter,
    Scenario,
    device_name,
    median_max,
    memory_now_bytes,
    paper_model,
    run_scenario,
    stage_parameters,
)

from continuo.server.continuation import Continuation
from continuo.server.engine.engine import Engine, EngineConfig
from continuo.server.engine.stream import TokenStream
from continuo.server.presets import load_preset
from continuo.server.serve import warm_up
from continuo.server.transport.protocol import Sequencer

ROOT = Path(__file__).resolve().parents[2]
CLIP_ROOT = ROOT / "models" / "piano"
ON_CPU = os.environ.get("CONTINUO_BENCH_DEVICE", "cuda") == "cpu"
DEVICE = os.environ.get("CONTINUO_BENCH_DEVICE", "cuda")
PAPER_SIZE = os.environ.get("CONTINUO_BENCH_PAPER_SIZE", "small" if ON_CPU else "paper")
JOBS = tuple(int(n) for n in os.environ.get("CONTINUO_BENCH_JOBS",
                                            "1,2" if ON_CPU else "1,4,16").split(","))
BARS = int(os.environ.get("CONTINUO_BENCH_BARS", "2" if ON_CPU else "8"))
PRESETS = tuple(os.environ.get("CONTINUO_BENCH_PRESETS", "paper,realtime").split(","))
THREADS = int(os.environ.get("CONTINUO_BENCH_SERVE_THREADS", "1"))
REPORT = Path(os.environ.get("CONTINUO_BENCH_REPORT", ROOT / "outputs" / "bench-gpu.md"))
SPEC = JobsSpec(bars=BARS)
AHEAD_S = 1.0
PAPER_RTF_TARGET, REALTIME_JOBS_TARGET, FIRST_CHUNK_TARGET_S = 0.5, 16, 0.2


def _device() -> torch.device:
    if ON_CPU:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        reason = (f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: "
                  f"{torch.version.cuda}); set CONTINUO_BENCH_DEVICE=cpu to prove the script on "
                  "the CPU at a reduced size")
        print(f"\nskipped: {reason}")  # `make bench-gpu` runs pytest -q without -rs
        pytest.skip(reason)
    return torch.device(DEVICE)


def _preset_path(name: str) -> Path | str:
    return paper_model(PAPER_SIZE) if name == "paper" else name


def _engine(stream: TokenStream, collector: Collector, out_dir: Path) -> Engine:
    """The server's engine over `stream`, sending to `collector` (headers numbered as the
    server numbers them)."""
    config = EngineConfig(out_dir=out_dir, clip_root=CLIP_ROOT, max_jobs=max(JOBS),
                          ahead_s=AHEAD_S)
    return Engine(stream, stream.pipeline.preset, config, collector.send, Sequencer().header)


def _measure(device: torch.device, tmp_path: Path) -> tuple[list[Scenario], dict[str, str]]:
    """Every preset × job count; → the scenarios and, per preset, how it ran (device,
    precision, parameters, load and warm-up seconds, weights' memory)."""
    scenarios, setups = [], {}
    for name in PRESETS:
        pipeline = Continuation(load_preset(_preset_path(name)), device=device)
        stream = TokenStream(pipeline)
        warm_s = warm_up(stream)
        weights = memory_now_bytes(device) / 2**20
        params = stage_parameters(pipeline.stages)
        setups[name] = (f"{pipeline.policy.describe()}, stages {params / 1e6:.1f}M parameters, "
                        f"warm-up {warm_s:.2f} s, memory after loading "
                        f"{weights:.0f} MiB")
        collector = Collector()
        engine = _engine(stream, collector, tmp_path / name)
        engine.start()
        try:
            for n_jobs in JOBS:
                timeout_s = 120 + 20 * n_jobs * SPEC.audio_s  # 20× realtime per job at worst
                scenarios.append(run_scenario(engine, collector, name, n_jobs, SPEC, timeout_s,
                                              MemoryMeter(device)))
        finally:
            engine.shutdown()
        del engine, stream, pipeline
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return scenarios, setups


def _row(s: Scenario) -> list[str]:
    first_med, first_max = median_max(s.first_s)
    rtf_med, rtf_max = median_max(s.rtf)
    late = sum(r.late_chunks for r in s.runs)
    chunks = sum(len(r.arrivals) for r in s.runs)
    misses = sum(r.done["misses"] for r in s.runs)
    return [s.preset, str(s.n_jobs), f"{first_med * 1000:.0f}", f"{first_max * 1000:.0f}",
            f"{rtf_med:.3f}", f"{rtf_max:.3f}", f"{min(s.speed):.2f}",
            f"{s.kept_up}/{s.n_jobs}", f"{misses}", f"{late}/{chunks}",
            f"{s.aggregate:.2f}", f"{s.memory_bytes / 2**20:.0f}"]


HEAD = ["preset", "jobs", "first ms med", "first ms max", "RTF med", "RTF max",
        "× realtime min", "kept up", "misses", "late/chunks", "audio s / wall s",
        "mem MiB"]


def _table(scenarios: list[Scenario]) -> str:
    rows = [HEAD, *(_row(s) for s in scenarios)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    return "\n".join(" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                     for r in rows)


def _markdown(scenarios: list[Scenario]) -> str:
    rows = [HEAD, ["---:"] * len(HEAD), *(_row(s) for s in scenarios)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _failures(scenarios: list[Scenario]) -> list[str]:
    by = {(s.preset, s.n_jobs): s for s in scenarios}
    failures = []
    if ("paper", 1) in by and (rtf := by["paper", 1].rtf[0]) > PAPER_RTF_TARGET:
        failures.append(f"paper preset, one job: RTF {rtf} > {PAPER_RTF_TARGET}")
    if ("realtime", 16) in by and (kept := by["realtime", 16].kept_up) < REALTIME_JOBS_TARGET:
        failures.append(f"realtime preset, 16 jobs: {kept} kept up, target "
                        f"{REALTIME_JOBS_TARGET}")
    for preset in PRESETS:
        if (preset, 1) in by and (first := max(by[preset, 1].first_s)) > FIRST_CHUNK_TARGET_S:
            failures.append(f"{preset} preset, one job: first chunk {first * 1000:.0f} ms > "
                            f"{FIRST_CHUNK_TARGET_S * 1000:.0f} ms")
    return failures


def _intro(device: torch.device, setups: dict[str, str]) -> list[str]:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    reduced = " (CPU: reduced size, targets not asserted)" if ON_CPU else ""
    return [f"# GPU serving benchmark (`make bench-gpu`), {when}", "",
            f"Device: {device}: {device_name(device)}; torch {torch.__version__} (CUDA "
            f"{torch.version.cuda}); {THREADS} torch thread(s).",
            f"Jobs: {SPEC.bars} bars of {SPEC.meter} at {SPEC.tempo:g} BPM ({SPEC.audio_s:g} s "
            f"of audio), {SPEC.chunk_beats:g}-beat chunks, prompt models/piano/clip.flac, engine "
            f"in-process, ahead_s {AHEAD_S:g}; paper stages at the `{PAPER_SIZE}` size{reduced}.",
            "", *(f"- {name}: {setup}" for name, setup in setups.items())]


def _outro(failures: list[str]) -> list[str]:
    verdict = "Missed: " + "; ".join(failures) if failures else "All met."
    return ["RTF: worker seconds / audio seconds per job (`done`'s realtime_factor); × realtime: "
            "audio seconds per wall second of a job, generate → last chunk; kept up: no server "
            "miss and no chunk late at its client; mem: "
            + ("max_memory_allocated per scenario." if not ON_CPU else "peak RSS (CPU)."), "",
            f"Targets (CUDA): paper RTF ≤ {PAPER_RTF_TARGET} for one job; "
            f"{REALTIME_JOBS_TARGET} realtime jobs kept up; first chunk ≤ "
            f"{FIRST_CHUNK_TARGET_S * 1000:.0f} ms (one job). {verdict}"]


@pytest.mark.timeout(3600)
def test_gpu_serving_bench(tmp_path: Path) -> None:
    device = _device()
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        scenarios, setups = _measure(device, tmp_path)
    finally:
        torch.set_num_threads(previous)
    failures = _failures(scenarios)
    intro, outro = _intro(device, setups), _outro(failures)
    print("\n\n" + "\n".join([*intro, "", _table(scenarios), "", *outro]))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join([*intro, "", _markdown(scenarios), "", *outro]) + "\n",
                      encoding="utf-8")
    print(f"figures written to {REPORT}")
    for s in scenarios:
        for run in s.runs:
            assert run.done["reason"] == "finished", run.done
            assert abs(run.audio_s - SPEC.audio_s) < 1e-6, f"{s.preset}: {run.audio_s} s"
    if not ON_CPU:
        assert not failures, "targets not met:\n" + "\n".join(failures)
