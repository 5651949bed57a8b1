"""Continuation presets: which model folder, which codec bandwidth, how each stage samples.

A preset is a TOML file in the repository's `presets/` (`load_preset("piano")`) or any path
(`load_preset("my.toml")`):

    model_dir = "models/piano"     # relative to the repository root, or absolute
    bandwidth_kbps = 6.0           # the codec bandwidth the stages were trained at
    context_s = 10.0               # prompt seconds kept (its tail) as the stages' context
    seed = 0                       # default seed of a continuation
    precision = "float32"          # "mixed" (bfloat16 products, CPU-tuned; bf16 on a GPU),
                                   # "bf16", "fp16" (model/precision.py, model/device.py)
    notes = "..."                  # free text

    [semantic]                     # [coarse], [fine] alike; every key optional
    temperature = 1.0              # >= 0, 0 = greedy
    top_k = 0                      # >= 0, 0 = off
    top_p = 1.0                    # (0, 1], 1 = off

Unknown keys and out-of-range values raise ConfigError naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuo.server.errors import ConfigError
from continuo.server.model.sampling import SamplingParams
from continuo.server.paths import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"
MAX_PRESET_BYTES = 1024 * 1024  # a preset is a few hundred bytes; never read a huge file


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
    precision: Literal["float32", "mixed", "bf16", "fp16"] = "float32"  # model/precision.py
    notes: str = ""
    semantic: StageSampling = StageSampling()
    coarse: StageSampling = StageSampling()
    fine: StageSampling = StageSampling()

    @property
    def model_path(self) -> Path:
        """model_dir, resolved against the repository root when relative."""
        return self.model_dir if self.model_dir.is_absolute() else REPO_ROOT / self.model_dir


def available_presets(folders: tuple[Path, ...] = (PRESETS_DIR,)) -> list[str]:
    """The names of the presets in `folders` (default: those shipped in presets/)."""
    return sorted({p.stem for folder in folders for p in folder.glob("*.toml")
                   if PRESET_NAME.fullmatch(p.stem)})


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def preset_folders(served: str | Path) -> tuple[Path, ...]:
    """Where a client may take presets from: presets/, and the folder of the preset file the
    server was started with (when it was given as a path)."""
    text = str(served)
    if text.endswith(".toml") or "/" in text:
        folder = Path(text).resolve().parent
        if folder != PRESETS_DIR.resolve():
            return (PRESETS_DIR, folder)
    return (PRESETS_DIR,)


def load_named_preset(name: str, folders: tuple[Path, ...]) -> Preset:
    """A preset a client names: a plain name (letters, digits, - and _) found as NAME.toml in
    one of `folders`, never a path — a client must not make the server read its files."""
    known = ", ".join(available_presets(folders)) or "(none)"
    if not PRESET_NAME.fullmatch(name):
        raise ConfigError(f"preset {name[:80]!r}: presets are named by plain name (letters, "
                          f"digits, - and _), not by path; known: {known}")
    for folder in folders:
        if (folder / f"{name}.toml").is_file():
            return load_preset(folder / f"{name}.toml")
    raise ConfigError(f"preset {name!r} not found; known: {known}")


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
        size = path.stat().st_size
        if size > MAX_PRESET_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a preset (at most "
                              f"{MAX_PRESET_BYTES})")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    return preset_from_dict(data, str(path), name=path.stem)
