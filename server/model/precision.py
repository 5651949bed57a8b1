"""How a trained decoder multiplies when it generates on a CPU: "float32" (as trained) or "mixed".

A decoding step multiplies one row by every weight matrix, so it is bound by reading the weights
(at the paper size 151M float32 weights, 600 MB per step); a prefill multiplies hundreds of rows
and is bound by arithmetic. "mixed" gives each Linear two read-only copies of its weight:

- float16 for steps (at most `max_step_rows` rows): half the bytes to read — a 1024 → 4096
  matrix-vector product ran 2.3× faster than float32 on this project's 2-core AMD EPYC;
- bfloat16 for prefills: the CPU's AVX512-BF16 matrix multiply — a 1,000-position prefill of a
  paper-size decoder ran 2.7× faster.

Inputs are cast down and outputs back to the caller's float32; embeddings, norms, attention and
the output heads stay float32. A coarse stage continuing 150 frames (delay layout) took 8.3 →
3.8 s at the paper size and 0.50 → 0.33 s at the small size. Both speed-ups rest on this CPU's
float16 and AVX512-BF16 kernels, so it is a preset's choice (`precision = "mixed"`), float32 by
default, and `make bench` measures both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from continuo.server.errors import ConfigError

PRECISIONS = ("float32", "mixed")
MAX_STEP_ROWS = 16  # rows (batch × new positions) still treated as a step
# Prefill rows are padded up to a multiple of this, so that row counts repeat: oneDNN keeps
# memory for every bfloat16 matrix shape it has seen (the soak, tests/soak, measured the
# server's RSS growing by ~4 MiB per job as new row counts came; padded, it stays flat).
PREFILL_ROWS_MULTIPLE = 32


class MixedLinear(nn.Module):
    """A Linear for inference: float16 weights for steps, bfloat16 for prefills."""

    def __init__(self, linear: nn.Linear, max_step_rows: int = MAX_STEP_ROWS) -> None:
        super().__init__()
        self.max_step_rows = max_step_rows
        weight, bias = linear.weight.detach(), linear.bias
        self.register_buffer("weight_f16", weight.half())
        self.register_buffer("weight_bf16", weight.bfloat16())
        self.register_buffer("bias_f16", None if bias is None else bias.detach().half())
        self.register_buffer("bias_bf16", None if bias is None else bias.detach().bfloat16())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C_in] (float32) → [..., C_out] in x's dtype."""
        rows = x.numel() // x.shape[-1]
        if rows <= self.max_step_rows:
            return F.linear(x.half(), self.weight_f16, self.bias_f16).to(x.dtype)
        flat = F.pad(x.reshape(rows, x.shape[-1]).bfloat16(),
                     (0, 0, 0, -rows % PREFILL_ROWS_MULTIPLE))
        out = F.linear(flat, self.weight_bf16, self.bias_bf16)[:rows]
        return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """The model, for inference at `precision` ("float32": unchanged; "mixed": every nn.Linear
    replaced in place by a MixedLinear). Eval mode, no gradients: it no longer trains."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "mixed":
        _replace_linears(model)
    return model.eval().requires_grad_(False)


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, MixedLinear(child))
        else:
            _replace_linears(child)
