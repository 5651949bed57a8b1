"""How a trained decoder multiplies when it generates: "float32" (as trained), "mixed" (a CPU
trick), "bf16" or "fp16" (for GPUs; they run on a CPU too). `model/device.py` maps a preset's
precision to the one used on a device (on a GPU "mixed" means "bf16").

A decoding step multiplies a few rows (one per job in the batch) by every weight matrix, so it
is bound by reading the weights (at the paper size 151M float32 weights, 600 MB per step); a
prefill multiplies hundreds of rows and is bound by arithmetic. "mixed" stores every Linear's
weight once in bfloat16 and multiplies on the CPU's AVX512-BF16 kernels: half the bytes to read
for steps (a 1024 → 4096 product of one row 529 → 251 µs) and 2.7× faster 1,000-position
prefills at the paper size. Measured on this project's 2-core AMD EPYC, 1 thread:

    1024 → 4096, µs     1 row   4 rows   8 rows
    float32               529     1210     1481
    float16               295     1207     2634
    bfloat16              251      237      306

float16 (used for steps until batching came) costs in proportion to the rows, so four jobs in
one batch cost four times one; bfloat16 stays flat. One dtype for every row count also keeps a
job's tokens independent of how many jobs share its batch. Inputs are cast down and outputs back
to the caller's float32; embeddings, norms, attention and the output heads stay float32.
Prefills (more than `MAX_STEP_ROWS` rows) are padded to a multiple of `PREFILL_ROWS_MULTIPLE`
rows on a CPU (see below). It rests on this CPU's AVX512-BF16, so it is a preset's choice
(`precision = "mixed"`), float32 by default, and `make bench` measures both.

"bf16" and "fp16" (`CastLinear`) store every Linear's weight once, in bfloat16 or float16: a GPU
multiplies them on its tensor cores. Inputs are cast down and outputs back to float32 as above;
embeddings, norms, softmax/attention, the KV cache and the output heads stay float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from continuo.server.errors import ConfigError

PRECISIONS = ("float32", "mixed", "bf16", "fp16")
CAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # CastLinear precisions
FLOAT32_LINEARS = ("lm_head",)  # an untied output head: the decoder reads its float32 weight
MAX_STEP_ROWS = 16  # rows (batch × new positions) still treated as a step (never padded)
# Prefill rows are padded up to a multiple of this, so that row counts repeat: oneDNN keeps
# memory for every bfloat16 matrix shape it has seen (the soak, tests/soak, measured the
# server's RSS growing by ~4 MiB per job as new row counts came; padded, it stays flat).
PREFILL_ROWS_MULTIPLE = 32


class CastLinear(nn.Module):
    """A Linear for inference with its weight stored once in `dtype` (bfloat16 or float16), on
    the weight's device: the input is cast down, the output back to the input's dtype.
    pad_rows: inputs of more than MAX_STEP_ROWS rows are padded to a multiple of
    PREFILL_ROWS_MULTIPLE rows (a CPU's oneDNN keeps memory per shape)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, pad_rows: bool = False) -> None:
        super().__init__()
        bias = linear.bias
        self.pad_rows = pad_rows
        self.register_buffer("weight", linear.weight.detach().to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C_in] (float32) → [..., C_out] in x's dtype."""
        rows = x.numel() // x.shape[-1]
        if not self.pad_rows or rows <= MAX_STEP_ROWS:
            return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)
        flat = F.pad(x.reshape(rows, x.shape[-1]).to(self.weight.dtype),
                     (0, 0, 0, -rows % PREFILL_ROWS_MULTIPLE))
        out = F.linear(flat, self.weight, self.bias)[:rows]
        return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"in_features={in_features}, out_features={out_features}, dtype={self.weight.dtype}"


class MixedLinear(CastLinear):
    """"mixed": bfloat16 weights for steps and prefills, prefills padded (see the module doc)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear, torch.bfloat16, pad_rows=True)


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """The model, for inference at `precision`, converted where its weights are (load it onto
    its device first). "float32": unchanged; "mixed": every nn.Linear replaced in place by a
    MixedLinear; "bf16"/"fp16": by a CastLinear. Eval mode, no gradients: it no longer trains."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "mixed":
        _replace_linears(model, MixedLinear)
    elif precision in CAST_DTYPES:
        dtype = CAST_DTYPES[precision]
        _replace_linears(model, lambda linear: CastLinear(linear, dtype))
    return model.eval().requires_grad_(False)


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    for name, child in module.named_children():
        if name in FLOAT32_LINEARS:
            continue
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
        else:
            _replace_linears(child, make)
