"""Where the pipeline runs and at what precision: `--device auto|cpu|cuda|cuda:N`.

`resolve_device` turns the name a user types into a `torch.device`, or a ConfigError saying
what is wrong (no CUDA in this torch build, no GPU visible, an index out of range, a name that
is not a device). `DevicePolicy` is the one place that says which precision the three stages run
at on a device, given the precision a preset asks for (`model/precision.py` does the work):

    preset precision   on cpu                                   on cuda
    float32            float32                                  float32
    mixed              mixed (bfloat16, padded prefills)        bf16
    bf16               bf16                                     bf16
    fp16               fp16                                     fp16

"mixed" is bfloat16 tuned for a CPU (prefills padded so that oneDNN's per-shape memory stays
bounded); on a GPU the same preset means bf16: every Linear's
weight stored once in bfloat16 on tensor cores, with embeddings, norms, attention (softmax),
the KV cache and the output heads in float32. The codec runs at float32 on every device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from continuo.server.errors import ConfigError
from continuo.server.model.precision import PRECISIONS

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA_NAME = re.compile(r"cuda(?::(\d+))?")
GPU_MIXED = "bf16"  # what a preset's "mixed" means on a GPU


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda when torch sees a GPU, else cpu; "cpu"; "cuda" / "cuda:N" when CUDA is
    available and N is a visible device. ConfigError naming the problem otherwise."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_NAME.fullmatch(text)
    if match is None:
        raise ConfigError(f"device {name!r} is not one of {', '.join(DEVICE_CHOICES)}")
    _check_cuda(name, None if match[1] is None else int(match[1]))
    return torch.device(text)


def _check_cuda(name: str, index: int | None) -> None:
    if not torch.cuda.is_available():
        why = (f"this torch {torch.__version__} is built without CUDA" if torch.version.cuda is None
               else "torch sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)")
        raise ConfigError(f"device {name!r}: CUDA is not available ({why}); use --device cpu "
                          "or auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(f"device {name!r}: CUDA device {index} is out of range ({count} "
                          f"visible: cuda:0 .. cuda:{count - 1})")


@dataclass(frozen=True)
class DevicePolicy:
    """A resolved device and the precision a preset asks for (`requested`); `precision` is what
    the stages run at there (see the table in the module doc)."""

    device: torch.device
    requested: str = "float32"

    def __post_init__(self) -> None:
        if self.requested not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.requested!r}")
        if not isinstance(self.device, torch.device) or self.device.type not in ("cpu", "cuda"):
            raise ConfigError(f"device must be a cpu or cuda torch.device, got {self.device!r}")

    @property
    def precision(self) -> str:
        """The stages' precision on this device: the preset's, except "mixed" on a GPU."""
        if self.requested == "mixed" and self.device.type == "cuda":
            return GPU_MIXED
        return self.requested

    def describe(self) -> str:
        """For logs: e.g. "cuda:0 (NVIDIA H200), precision bf16 (preset: mixed)"."""
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        asked = "" if self.precision == self.requested else f" (preset: {self.requested})"
        return f"{where}, precision {self.precision}{asked}"


def host_values(values: list, device: torch.device, dtype: torch.dtype = torch.long
                ) -> torch.Tensor:
    """A few host numbers (row indices, lengths) as a tensor on `device`. On a GPU they go
    through pinned memory, copied without waiting for the device: a plain copy from pageable
    memory synchronises the stream, which the token loops never do."""
    tensor = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
