"""`continuo serve`: load a preset's model once, warm it, and serve jobs until stopped.

Wires the pieces together: the pipeline (`Continuation`), its stream (`engine.stream`), the
engine and the ZeroMQ server. The warm-up first captures, on a GPU, the stages' decoding steps
as CUDA graphs for every batch size the engine can form (`warm_static_steps`; nothing on a CPU),
then runs a short generation from a synthetic chord, so the first real job does not pay for
first-call allocations or captures. `ServeOptions.device` (`--device`, checked when the options
are made, before anything loads or binds) puts codec and stages on the CPU or a GPU; the log and
the `hello` reply say which device and precision. The caller sets OMP_WAIT_POLICY before torch
is imported (the CLI does): on 2 cores, spinning OpenMP threads steal the core the audio side
needs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continuo.server.continuation import Continuation
from continuo.server.engine.engine import Engine, EngineConfig
from continuo.server.engine.stream import TokenStream
from continuo.server.model.device import DevicePolicy, resolve_device
from continuo.server.model.static_step import static_step_for
from continuo.server.presets import load_preset, preset_folders
from continuo.server.transport.server import Server, ServerConfig, hello_info

log = logging.getLogger(__name__)
WARMUP_S = 1.0


@dataclass(frozen=True)
class ServeOptions:
    preset: str = "realtime"
    threads: int = 1  # measured: 1 thread 0.30× realtime, 2 threads 0.55× (13-frame blocks)
    device: str = "auto"  # auto (cuda when torch sees a GPU), cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        resolve_device(self.device)  # ConfigError (e.g. no CUDA) before anything loads or binds


def warm_up(stream: TokenStream, max_batch: int = EngineConfig.max_batch) -> float:
    """Prepare the stages' static steps for batches of up to max_batch jobs
    (`warm_static_steps`), then one short generation from a synthetic chord; → seconds."""
    started = time.perf_counter()
    warm_static_steps(stream.pipeline, max_batch)
    rate = stream.sample_rate
    t = np.arange(round(WARMUP_S * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    state = stream.start((0.2 * chord).astype(np.float32), rate, 0, WARMUP_S)
    stream.advance(state, stream.frames_for(state, rate // 4))
    return time.perf_counter() - started


def warm_static_steps(pipeline: Continuation, max_batch: int) -> int:
    """For every stage that decodes through a static step (on CUDA by default, see
    model/static_step.py): reserve its cache for the longest decode of the stage and max_batch
    rows, and capture the step of every row bucket a batch can land in, for the stage's token
    shape. → graphs captured; none, and nothing done, where the stages decode eagerly (a CPU's
    default)."""
    made = 0
    for name, (stage, model) in pipeline.stages.items():
        stepper = static_step_for(model)
        if stepper is None:
            continue
        started = time.perf_counter()
        max_len, token_shape = _decode_shape(stage)
        stepper.reserve(max_len, max_batch)
        count = stepper.warm_up(max_batch, token_shape)
        made += count
        log.info("static step (%s) of the %s stage: %d graphs for up to %d rows of %s, %d "
                 "positions, cache %.1f MiB, in %.2f s", stepper.mode, name, count, max_batch,
                 token_shape, stepper.max_len, stepper.cache.nbytes / 2**20,
                 time.perf_counter() - started)
    return made


def _decode_shape(stage: Any) -> tuple[int, tuple[int, ...]]:
    """The most positions one decode of `stage` needs — a window's (the pipeline and the stream
    decode window by window) — and the shape of one fed position: [1] ids, or [R, 1] columns
    of the delay layout."""
    config = stage.config
    if stage.name == "semantic":
        return config.window_tokens, (1,)
    return config.longest_sequence, ((stage.n_rows, 1) if config.layout == "delay" else (1,))


def build_engine(options: ServeOptions, engine_config: EngineConfig,
                 server: Server) -> Engine:
    """Load the preset's model, warm it, and make the engine that sends through `server`."""
    torch.set_num_threads(options.threads)
    preset = load_preset(options.preset)
    started = time.perf_counter()
    pipeline = Continuation(preset, device=options.device)
    stream = TokenStream(pipeline)
    log.info("loaded %s (preset %s) on %s in %.2f s; warm-up %.2f s", preset.model_path,
             preset.name, pipeline.policy.describe(), time.perf_counter() - started,
             warm_up(stream, engine_config.max_batch))
    engine_config = dataclasses.replace(engine_config,
                                        preset_dirs=preset_folders(options.preset))
    return Engine(stream, preset, engine_config, server.send, server.headers)


def serve(options: ServeOptions, engine_config: EngineConfig, server_config: ServerConfig) -> None:
    """Serve until SIGINT/SIGTERM (KeyboardInterrupt) or `Server.stop`."""
    server = Server(server_config)
    engine = build_engine(options, engine_config, server)
    model = Path(engine.preset.model_path).name
    policy = DevicePolicy(resolve_device(options.device), engine.preset.precision)
    info = {**hello_info(engine, model), "device": str(policy.device),
            "precision": policy.precision}
    try:
        server.serve(engine, info)
    except KeyboardInterrupt:
        log.info("interrupted: stopped cleanly")
