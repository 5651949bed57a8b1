"""Live parameters: the knobs a performer turns while a job plays, mapped onto a preset.

    temperature  0–5     every stage's sampling temperature (0: greedy)
    top_k        0–1000  every stage's top-k (0: off), a whole number
    top_p        0–1     every stage's nucleus mass (1: off; 0 is taken as 1e-3)
    variation    0–1     how far the music may wander from where it is: scales the semantic
                         stage's temperature from 0.5× (0: stays close) to 1.5× (1), 0.5 = as
                         the preset says; applied after `temperature`

A job's parameters start from its generate message and change with `param` messages (merged:
a later message overrides only the names it carries). `sampling_preset` is pure: the preset the
next block is sampled with.
"""

from __future__ import annotations

from continuo.server.errors import ConfigError
from continuo.server.presets import Preset, StageSampling
from continuo.server.transport.protocol import PARAM_RANGES as RANGES

STAGES = ("semantic", "coarse", "fine")


def check_params(params: dict[str, float]) -> dict[str, float]:
    """The parameters as floats; ConfigError naming each unknown or out-of-range one."""
    problems = []
    for name, value in params.items():
        if name not in RANGES:
            problems.append(f"unknown parameter {name!r} (known: {', '.join(RANGES)})")
            continue
        low, high = RANGES[name]
        if not low <= value <= high:
            problems.append(f"{name} {value:g} is out of range {low:g}..{high:g}")
        elif name == "top_k" and value != int(value):
            problems.append(f"top_k {value:g} must be a whole number")
    if problems:
        raise ConfigError("; ".join(problems))
    return {name: float(value) for name, value in params.items()}


def sampling_preset(preset: Preset, params: dict[str, float]) -> Preset:
    """`preset` with its per-stage sampling changed by `params` (already checked)."""
    stages = {}
    for stage in STAGES:
        s: StageSampling = getattr(preset, stage)
        temperature = params.get("temperature", s.temperature)
        if stage == "semantic" and "variation" in params:
            temperature *= 0.5 + params["variation"]
        stages[stage] = StageSampling(
            temperature=min(temperature, 10.0),
            top_k=int(params.get("top_k", s.top_k)),
            top_p=max(params.get("top_p", s.top_p), 1e-3),
        )
    return preset.model_copy(update=stages)
