"""Continuation presets: which model folder, which codec bandwidth, how each stage samples.

A preset is a TOML file in the repository's `presets/` (`load_preset("piano")`) or any path
(`load_preset("my.toml")`):

    model_dir = "models/piano"     # relative to the repository root, or absolute
    bandwidth_kbps = 6.0           # the codec bandwidth the stages were trained at
    context_s = 10.0               # prompt seconds kept (its tail) as the stages' context
    seed = 0                       # default seed of a continuation
    precision = "float32"          # or "mixed": float16/bfloat16 products (model/precision.py)
    notes = "..."                  # free text

    [semantic]                     # [coarse], [fine] alike; every key optional
    temperature = 1.0              # >= 0, 0 = greedy
    top_k = 0                      # >= 0, 0 = off
    top_p = 1.0                    # (0, 1], 1 = off

Unknown keys and out-of-range values raise ConfigError naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuo.server.errors import ConfigError
from continuo.server.model.sampling import SamplingParams
from continuo.server.paths import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"


class StageSampling(BaseModel):
    """How one stage samples (see `SamplingParams`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0.0, le=10.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)

    def params(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p)


class Preset(BaseModel):
    """One continuation setup (see the module doc for the TOML keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    model_dir: Path = Path("models/piano")
    bandwidth_kbps: float = Field(6.0, gt=0.0, le=48.0)
    context_s: float = Field(10.0, gt=0.0, le=60.0)
    seed: int = Field(0, ge=0, lt=2**63)
    precision: Literal["float32", "mixed"] = "float32"
    notes: str = ""
    semantic: StageSampling = StageSampling()
    coarse: StageSampling = StageSampling()
    fine: StageSampling = StageSampling()

    @property
    def model_path(self) -> Path:
        """model_dir, resolved against the repository root when relative."""
        return self.model_dir if self.model_dir.is_absolute() else REPO_ROOT / self.model_dir


def available_presets() -> list[str]:
    """The names of the presets shipped in presets/."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_from_dict(data: dict[str, Any], where: str, name: str = "custom") -> Preset:
    """A Preset from TOML-like data; ConfigError naming `where` and every bad key."""
    try:
        return Preset(**{"name": name, **data})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise ConfigError(f"{where}: invalid preset ({problems})") from err


def load_preset(name_or_path: str | Path) -> Preset:
    """presets/<name>.toml for a bare name, else the TOML file at the path."""
    text = str(name_or_path)
    is_path = text.endswith(".toml") or "/" in text or Path(text).is_file()
    path = Path(text) if is_path else PRESETS_DIR / f"{text}.toml"
    if not path.is_file():
        raise ConfigError(f"preset {text!r} not found ({path}); available presets: "
                          f"{', '.join(available_presets()) or '(none)'}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    return preset_from_dict(data, str(path), name=path.stem)
