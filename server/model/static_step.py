"""A decoding step with static shapes and no host syncs, ready to be captured as a CUDA graph.

Why: on a GPU, one decoding step of a paper-size stage (12 layers, d 1024) multiplies a handful
of rows by every weight matrix: little arithmetic, but ~150 small kernels, each launched from
Python. The step is then bound by launches and Python, not by the GPU. A CUDA graph records the
kernels of one step once and replays them with one launch; `torch.compile(mode=
"reduce-overhead")` records them, but only for a function whose shapes never change and that
never waits for the host. `Decoder.step` is neither: it attends over the `length + 1` filled
positions (a new shape each step) and reads the position as a Python int.

What: `StaticStep` shares a Decoder's (or ColumnDecoder's) modules and weights and feeds one
position with every shape fixed:

- the KV cache is preallocated and owned by the stepper, one per bucket of (batch rows, max_len):
  rows rounded up to 1, 2, 4, 8, 16 (then multiples of 16; padding rows are dummies whose
  outputs are dropped), max_len up to a multiple of `LEN_MULTIPLE` (capped at max_seq_len). Its
  addresses never change, so a recorded graph writes into it directly;
- the position to write is a 0-dim int64 tensor on the device, beside the cache, incremented in
  place inside the step; the new key/value is written there by an indexed write into the whole
  cache tensor, which inductor keeps in place (see `_StaticWrite`);
- attention runs over the whole max_len with a mask: keys after the position, and keys before a
  row's `starts` (a ragged batch, see kv_cache.py), get −inf; the relative-position bias is that
  of distance position − key, as in `RelativePositionBias`. The blocks' own `forward` runs (one
  code path for precision casts, grouped heads, norms), with `_StaticWrite` in the cache's
  place.

So step 1 and step 1,000 of a bucket are the same graph. Compiled graphs are kept per (bucketed
rows, max_len, token shape) on the stepper; `generate.prepare_rows` borrows a bucket's cache
(`StaticStep.borrow`) and `generate.feed` steps through it (`StaticDecode.step`).

Selection (`static_step_for`): on CUDA the stepper is used by default, compiled with
`torch.compile(mode="reduce-overhead", fullgraph=True, dynamic=False)` (CUDA graphs);
CONTINUO_STATIC_STEP=0 opts out. On a CPU the eager `Decoder.step` stays the default;
CONTINUO_STATIC_STEP=1 opts in (uncompiled: the same maths, for tests). `use_static_step(model,
stepper)` makes the choice explicitly. The first step of every bucket compiles (inductor took
16 s for the small preset on this project's CPU): a server warms the buckets it will use
(`StaticStep.warm_up`), in the thread that decodes (torch keeps CUDA graphs per thread).

Expected on a GPU (not measured here: this project's machine has none): the step's cost falls
from ~150 launches to one graph replay, so a paper-size step should approach the time of reading
its weights; attention over the whole bucket instead of the filled positions costs a little more
arithmetic, which a GPU hides at these sizes. On a CPU there are no launches to save and the
longer attention costs extra, hence eager there by default. Measured on this project's 2-core
CPU (small preset, 1 thread, position ~200 in a 512-position bucket; a shared, noisy machine):
one row 0.82 ms eager `Decoder.step`, 0.85 ms uncompiled static step, 0.59 ms static step
compiled by inductor; four rows 1.98, 2.06 and 1.86 ms. Uncompiled, the static step is 0-17 %
slower than eager over 1-4 rows, positions 200-900, float32 and "mixed".
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.model.kv_cache import KVCache

log = logging.getLogger(__name__)

ENV_VAR = "CONTINUO_STATIC_STEP"  # "1": on, "0": off, unset: on for CUDA, off for a CPU
ROW_BUCKETS = (1, 2, 4, 8, 16)  # batch rows rounded up to one of these, then to multiples of 16
LEN_MULTIPLE = 256  # cache max_len rounded up to a multiple of this (capped at max_seq_len)
_ATTR = "_continuo_static_step"  # where the chosen stepper (or None) is kept on a model

StepFn = Callable[..., torch.Tensor]
Compiler = Callable[[StepFn], StepFn]


def bucket_rows(n_rows: int) -> int:
    """Rows of the static batch for n_rows real ones: 3 → 4, 9 → 16, 17 → 32."""
    if n_rows < 1:
        raise ConfigError(f"a static step needs at least one row, got {n_rows}")
    for size in ROW_BUCKETS:
        if n_rows <= size:
            return size
    last = ROW_BUCKETS[-1]
    return -(-n_rows // last) * last


def bucket_len(max_len: int, limit: int) -> int:
    """Cache positions for max_len needed: up to a multiple of LEN_MULTIPLE, at most limit."""
    if not 1 <= max_len <= limit:
        raise ConfigError(f"cache max_len must be in 1..{limit} (max_seq_len), got {max_len}")
    return min(-(-max_len // LEN_MULTIPLE) * LEN_MULTIPLE, limit)


def cuda_graph_compiler(fn: StepFn) -> StepFn:
    """torch.compile with CUDA graphs, static shapes, one graph; each call gets its own
    recompile count where torch allows it (isolate_recompiles), so many buckets never hit the
    recompile limit (8 per function by default)."""
    extra = ({"isolate_recompiles": True}
             if "isolate_recompiles" in inspect.signature(torch.compile).parameters else {})
    return torch.compile(fn, mode="reduce-overhead", fullgraph=True, dynamic=False, **extra)


class _StaticWrite:
    """The cache as `CausalSelfAttention` sees it inside a static step: `update` writes the new
    key/value (B, nkv, 1, hs) at `position` in place and returns all max_len positions.

    The write indexes the whole [L, B, nkv, max_len, hs] tensor (layer and position as index
    tensors): inductor turns that into an in-place scatter of the new entries. Written through
    a view (`keys[layer].index_copy_`), it copied each layer's whole cache every step instead.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, position: torch.Tensor) -> None:
        self.keys, self.values, self.index = keys, values, position.view(1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        where = torch.full((1,), layer, dtype=torch.long, device=k.device)
        self.keys[where, :, :, self.index] = k.permute(2, 0, 1, 3)  # (1, B, nkv, hs)
        self.values[where, :, :, self.index] = v.permute(2, 0, 1, 3)
        return self.keys[layer], self.values[layer]  # (B, nkv, max_len, hs)


@dataclass
class _Bucket:
    """One bucket's static buffers: the cache, each row's first position and the position."""

    keys: torch.Tensor  # [L, B, nkv, max_len, hs]
    values: torch.Tensor
    starts: torch.Tensor  # [B] int64
    position: torch.Tensor  # 0-dim int64: where the next step writes
    lent_to: weakref.ref | None = None  # the StaticDecode using it, while alive


class StaticStep:
    """Static-shape decoding steps of one model (its modules and weights, shared). compiler:
    turns the step function into the one that runs (None: eager; on CUDA by default
    `cuda_graph_compiler`). Keeps one cache and one compiled graph per bucket."""

    def __init__(self, model: nn.Module, compiler: Compiler | None = None) -> None:
        self.model, self.compiler = model, compiler
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._graphs: dict[tuple[int, int, tuple[int, ...]], StepFn] = {}
        self._tokens: dict[tuple[int, ...], torch.Tensor] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> StaticStep:
        """A copied model gets a stepper of its own, with nothing allocated or compiled yet."""
        return type(self)(copy.deepcopy(self.model, memo), self.compiler)

    @property
    def compiled(self) -> bool:
        return self.compiler is not None

    def borrow(self, n_rows: int, max_len: int) -> StaticDecode | None:
        """A decode of n_rows rows with room for max_len positions on its bucket's cache (rows
        and length bucketed, empty, every row starting at 0), or None while that cache is
        still used by another decode (the caller then decodes eagerly)."""
        rows, length = bucket_rows(n_rows), bucket_len(max_len, self.model.config.max_seq_len)
        bucket = self._bucket(rows, length)
        if bucket.lent_to is not None and bucket.lent_to() is not None:
            log.debug("static cache (%d rows, %d positions) busy: eager decode", rows, length)
            return None
        bucket.starts.zero_()
        cache = KVCache(keys=bucket.keys, values=bucket.values, starts=bucket.starts)
        decode = StaticDecode(self, bucket, cache, n_rows)
        bucket.lent_to = weakref.ref(decode)
        return decode

    def release(self) -> None:
        """Drop every bucket's cache and compiled graph (they are made again when needed)."""
        self._buckets.clear()
        self._graphs.clear()
        self._tokens.clear()

    def warm_up(self, n_rows: int, max_len: int, token_shape: tuple[int, ...] = (1,)) -> None:
        """Compile (and, on CUDA, record) the graph of one bucket with dummy tokens: token_shape
        (1,) for a Decoder, (R, 1) for a ColumnDecoder of R-row columns."""
        decode = self.borrow(n_rows, max_len)
        if decode is None:
            raise ConfigError("static step warm-up: the bucket's cache is in use")
        weight = self.model.tok_emb.weight
        tokens = torch.zeros((n_rows, *token_shape), dtype=torch.long, device=weight.device)
        with torch.no_grad():
            for _ in range(3):  # CUDA graph trees warm up once, then record, then replay
                decode.step(tokens)

    def _bucket(self, rows: int, length: int) -> _Bucket:
        bucket = self._buckets.get((rows, length))
        if bucket is None:
            cache = self.model.new_cache(rows, length)
            device = cache.keys.device
            bucket = _Bucket(keys=cache.keys, values=cache.values,
                             starts=torch.zeros(rows, dtype=torch.long, device=device),
                             position=torch.zeros((), dtype=torch.long, device=device))
            if self.compiled:  # a recorded graph reads and writes these where they are
                for tensor in (bucket.keys, bucket.values, bucket.starts, bucket.position):
                    torch._dynamo.mark_static_address(tensor)
            self._buckets[(rows, length)] = bucket
        return bucket

    def token_buffer(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A static int64 input [B, 1] or [B, R, 1], shared by the buckets of B rows; padding
        rows hold 0 or an id an earlier decode left (any id: their outputs are dropped)."""
        buffer = self._tokens.get(shape)
        if buffer is None:
            buffer = torch.zeros(shape, dtype=torch.long, device=device)
            if self.compiled:
                torch._dynamo.mark_static_address(buffer)
            self._tokens[shape] = buffer
        return buffer

    def graph(self, rows: int, length: int, token_shape: tuple[int, ...]) -> StepFn:
        """The step function of one bucket: compiled once, then reused."""
        key = (rows, length, token_shape)
        fn = self._graphs.get(key)
        if fn is None:
            fn = self.forward if self.compiler is None else self.compiler(self.forward)
            self._graphs[key] = fn
        return fn

    def forward(self, tokens: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                position: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """One position for every row, shapes fixed by the bucket: tokens [B, 1] or [B, R, 1],
        keys/values [L, B, nkv, max_len, hs] (written at `position`), position 0-dim int64
        (incremented in place), starts [B] → logits [B, V] or [B, K, V]."""
        model = self.model
        x = model.drop(model._embed(tokens))  # (B, 1, C)
        bias = self.attention_bias(position, starts, keys.shape[3])  # (B, nh, 1, max_len)
        cache = _StaticWrite(keys, values, position)
        for layer, block in enumerate(model.blocks):
            x = block(x, bias, cache, layer)
        position.add_(1)
        return model._head(model.norm_f(x))[..., -1, :]

    def attention_bias(self, position: torch.Tensor, starts: torch.Tensor,
                       max_len: int) -> torch.Tensor:
        """(B, nh, 1, max_len): the relative-position bias of the query at `position` against
        keys 0 .. max_len − 1; −inf for keys after it and for keys before a row's start."""
        rel = self.model.rel_bias
        key = torch.arange(max_len, device=starts.device)
        distance = position - key  # (max_len,)
        bias = rel.table(rel.buckets[distance.clamp(min=0)]).t()  # (nh, max_len)
        hidden = (distance < 0)[None, :] | (key[None, :] < starts[:, None])  # (B, max_len)
        return bias[None, :, None, :].masked_fill(hidden[:, None, None, :], float("-inf"))


@dataclass
class StaticDecode:
    """One decode's use of a bucket: its cache (length and starts as in KVCache; `rows` real
    rows of the bucket's), stepped one position at a time by `step`."""

    stepper: StaticStep
    bucket: _Bucket
    cache: KVCache
    rows: int
    _position_at: int | None = field(default=None, repr=False)  # cache.length `position` holds

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [rows, 1] or [rows, R, 1] after the cache's filled positions → logits
        [rows, V] or [rows, K, V] (a copy: the graph's own output is overwritten next step)."""
        cache, bucket = self.cache, self.bucket
        if tokens.shape[0] != self.rows or tokens.shape[-1] != 1:
            raise ConfigError(f"static step takes one position for {self.rows} rows, got tokens "
                              f"{tuple(tokens.shape)}")
        if cache.free < 1:
            raise ConfigError(f"KV cache full: {cache.length} of {cache.max_len} positions")
        if self._position_at != cache.length:  # first step, or the cache was cut
            bucket.position.fill_(cache.length)
        if cache.starts is not bucket.starts:  # a cut or reset replaced starts: copy it back
            if cache.starts is None:
                bucket.starts.zero_()
            else:
                bucket.starts.copy_(cache.starts)
            cache.starts = bucket.starts
        shape = (cache.batch_size, *tokens.shape[1:])
        buffer = self.stepper.token_buffer(shape, tokens.device)
        buffer[: self.rows].copy_(tokens)
        fn = self.stepper.graph(cache.batch_size, cache.max_len, tuple(shape[1:]))
        if self.stepper.compiled and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        logits = fn(buffer, bucket.keys, bucket.values, bucket.position, bucket.starts)
        cache.advance(1)
        self._position_at = cache.length
        return logits[: self.rows].clone()


def use_static_step(model: nn.Module, stepper: StaticStep | None) -> None:
    """Choose how `generate` feeds this model: through `stepper`, or eagerly (None)."""
    model.__dict__[_ATTR] = stepper


def static_step_for(model: nn.Module) -> StaticStep | None:
    """The model's stepper, chosen at first use (see the module doc), or None for eager."""
    if _ATTR not in model.__dict__:
        device = model.tok_emb.weight.device
        setting = os.environ.get(ENV_VAR, "").strip()
        if setting not in ("", "0", "1"):
            raise ConfigError(f"{ENV_VAR} must be 0 or 1 (or unset), got {setting!r}")
        on_cuda = device.type == "cuda"
        wanted = setting == "1" or (setting == "" and on_cuda)
        compiler = cuda_graph_compiler if on_cuda else None
        use_static_step(model, StaticStep(model, compiler) if wanted else None)
    return model.__dict__[_ATTR]
