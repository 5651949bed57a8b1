"""`continuo serve`: load a preset's model once, warm it, and serve jobs until stopped.

Wires the pieces together: the pipeline (`Continuation`), its stream (`engine.stream`), the
engine and the ZeroMQ server. The warm-up is a short generation from a synthetic chord, so the
first real job does not pay for first-call allocations. `ServeOptions.device` (`--device`,
checked when the options are made, before anything loads or binds) puts codec and stages on the
CPU or a GPU; the log and the `hello` reply say which device and precision. The caller sets
OMP_WAIT_POLICY before torch is imported (the CLI does): on 2 cores, spinning OpenMP threads
steal the core the audio side needs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from continuo.server.continuation import Continuation
from continuo.server.engine.engine import Engine, EngineConfig
from continuo.server.engine.stream import TokenStream
from continuo.server.model.device import DevicePolicy, resolve_device
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


def warm_up(stream: TokenStream) -> float:
    """One short generation from a synthetic chord; → seconds it took."""
    started = time.perf_counter()
    rate = stream.sample_rate
    t = np.arange(round(WARMUP_S * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    state = stream.start((0.2 * chord).astype(np.float32), rate, 0, WARMUP_S)
    stream.advance(state, stream.frames_for(state, rate // 4))
    return time.perf_counter() - started


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
             warm_up(stream))
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
