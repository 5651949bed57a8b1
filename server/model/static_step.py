"""A decoding step with static shapes and no host syncs, recorded once as a CUDA graph.

Why: on a GPU, one decoding step of a paper-size stage (12 layers, d 1024) multiplies a handful
of rows by every weight matrix: little arithmetic, but ~150 small kernels, each launched from
Python. The step is then bound by launches and Python, not by the GPU. A CUDA graph records the
kernels of one step once and replays them with one launch, but only for a step whose shapes
never change and that never waits for the host. `Decoder.step` is neither: it attends over the
`length + 1` filled positions (a new shape each step) and reads the position as a Python int.

What: `StaticStep` shares a Decoder's (or ColumnDecoder's) modules and weights and feeds one
position with every shape fixed:

- the cache is preallocated once per model (static_cache.py): max_len positions, the model's
  one length bucket — max_seq_len by default; the server reserves the longest decode its stage
  can need (`reserve`, from serve.warm_up: the stage's window, rounded up to a multiple of 256).
  A decode of n rows uses a row bucket (n rounded up to 1, 2, 4, 8, 16, then multiples of 16;
  padding rows are dummies whose outputs are dropped): the first rows of that one cache, whose
  address never changes, so a recorded graph writes into it directly. A decode needing more
  positions than max_len runs eagerly (`borrow` → None); one needing more rows than reserved
  grows the cache (its graphs are then captured again);
- the position to write is a 0-dim int64 tensor on the device, incremented in place inside the
  step; the new key/value is written there by an indexed write into the whole cache tensor
  (see `_StaticWrite`);
- attention runs over the whole max_len with a mask: keys after the position, and keys before a
  row's `starts` (a ragged batch, see kv_cache.py), get −inf; the relative-position bias is that
  of distance position − key, as in `RelativePositionBias`. The blocks' own `forward` runs (one
  code path for precision casts, grouped heads, norms), with `_StaticWrite` in the cache's
  place.

So step 1 and step 1,000 of a bucket are the same graph: one graph per (row bucket, token shape)
— [B, 1] ids or [B, R, 1] delay columns — kept on the stepper. `generate.prepare_rows` borrows
the cache (`StaticStep.borrow`) and `generate.feed` steps through it (`StaticDecode.step`).

Modes (`CONTINUO_STATIC_STEP`, read when a model is first decoded; `use_static_step` chooses
explicitly):

    unset    "graph" on CUDA, "off" on a CPU
    off, 0   `Decoder.step`, eager over the filled positions (a CPU's default: it has no
             launches to save and the longer attention costs it 0-17 %)
    graph, 1 the static step captured per bucket with torch.cuda.CUDAGraph and replayed
             (step_graph.py; no compiler). On a CPU, the stand-in runs the same plumbing
             eagerly (tests)
    eager    the static step run eagerly, no graph: tells the static maths from the recording
    compile  torch.compile(mode="reduce-overhead", dynamic=False) per bucket: inductor's fused
             kernels inside its CUDA graphs. Opt-in: inductor took 16-22 s per bucket for the
             small preset on this project's CPU (tens of seconds at the paper size on a GPU
             expected), and its graphs are kept per thread: a graph recorded by the warm-up is
             recorded again by the engine's worker on its first step (no recompile)

On a GPU by default (graph): `serve.warm_up` reserves each stage's cache and captures every row
bucket up to the engine's max_batch, for the stage's token shape, before the engine starts: 5
row buckets × 3 stages = 15 captures at max_batch 16. A capture is 3 eager warm-up steps on a
side stream plus one recorded step (and a device synchronize): expected milliseconds to tens of
milliseconds each at the paper size, so well under a few seconds in all (first cuBLAS/attention
initialisations included) instead of minutes of inductor. A graph is an ordinary object: any
thread may replay it (launched on that thread's current stream), so the main thread's warm-up
serves the worker. A bucket not warmed is captured at its first step (no job stalls for long).

Memory, computed (float32 cache; not measured): a position of one row holds 2 × L × nkv × hs × 4
bytes — 96 KiB at the paper size (12 layers, 16 heads of 64). The server's lengths for the
`paper` benchmark's stages (flat layout, our 8-codebook codec with 3 coarse levels, windows of
30/10/3 s): semantic 750 → 768 positions (72 MiB per
row), coarse 250 + 1 + 750 × 3 = 2,501 → 2,560 (240 MiB per row), fine 225 × 8 + 1 = 1,801 →
2,048 (192 MiB per row); at 16 rows 1.1 + 3.75 + 3.0 = 7.9 GiB for the three stages, shared by
every row bucket (separate caches per row bucket would hold 31 rows: 15.3 GiB; per row bucket at
max_seq_len 4,096: 35 GiB). The small stages of `realtime` (4 layers, 4 heads of 64) take 8 KiB
per position and row: 1024 positions × 16 rows = 128 MiB for the coarse stage. Graphs share
one memory pool per model (their intermediates: estimated at a few MiB each).

Still unmeasured (no GPU was lent to this project): capture and warm-up times; the step's time
replayed against eager and compiled; and what attending over the whole bucket costs. Every step
reads the bucket's whole cache: at the paper size and 16 rows a coarse step reads 3.75 GiB
(~0.8 ms of an H200's bandwidth) where the stream's decodes fill ~600 of the 2,560 positions. If
that shows, a few length buckets (e.g. 512, 1,024, max) per model would cost only more captures,
now that one is cheap. Measured on this project's 2-core CPU (small preset, 1 thread, position
~200 in a 512-position bucket; a shared, noisy machine): one row 0.82 ms eager `Decoder.step`,
0.85 ms uncompiled static step, 0.59 ms static step compiled by inductor; four rows 1.98, 2.06
and 1.86 ms.
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
from continuo.server.model.static_cache import (
    Bucket,
    Saved,
    StaticCache,
    bucket_len,
    bucket_rows,
    plain_tensors,
    row_buckets,
)
from continuo.server.model.step_graph import Graph, graphs_for

log = logging.getLogger(__name__)

ENV_VAR = "CONTINUO_STATIC_STEP"
MODES = ("off", "graph", "eager", "compile")  # see the module doc
ALIASES = {"0": "off", "1": "graph"}
WARM_UP_STEPS = 3  # eager steps before a capture (torch's docs use 3)
_ATTR = "_continuo_static_step"  # where the chosen stepper (or None) is kept on a model

StepFn = Callable[..., torch.Tensor]
Compiler = Callable[[StepFn], StepFn]
Run = Callable[[], torch.Tensor]  # one step of a bucket on its static inputs → its logits


def step_mode(device: torch.device) -> str:
    """The mode for a model on `device`: CONTINUO_STATIC_STEP (see the module doc), or by
    default "graph" on CUDA and "off" elsewhere. ConfigError for any other value."""
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if not setting:
        return "graph" if device.type == "cuda" else "off"
    mode = ALIASES.get(setting, setting)
    if mode not in MODES:
        raise ConfigError(f"{ENV_VAR} must be one of {', '.join(MODES)} (or 0 = off, 1 = graph, "
                          f"unset = graph on CUDA, off on a CPU), got {setting!r}")
    return mode


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


class StaticStep:
    """Static-shape decoding steps of one model (its modules and weights, shared); see the
    module doc. graphs: makes the Graph each bucket is captured into (`step_graph.graphs_for`);
    compiler: compiles each bucket's step instead; neither: the static step runs eagerly.
    max_len: the one length bucket (default max_seq_len). `captures` counts the graphs captured
    (or steps compiled) so far."""

    def __init__(self, model: nn.Module, graphs: Callable[[], Graph] | None = None,
                 compiler: Compiler | None = None, max_len: int | None = None) -> None:
        if graphs is not None and compiler is not None:
            raise ConfigError("a static step is captured (graphs) or compiled, not both")
        self.model, self.graphs, self.compiler = model, graphs, compiler
        length = model.config.max_seq_len if max_len is None else max_len
        self.cache = StaticCache(model, length, static_addresses=compiler is not None)
        self.captures = 0
        self._told_long = False  # a decode too long for the length bucket was logged
        self._runs: dict[tuple[int, tuple[int, ...]], Run] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> StaticStep:
        """A copied model gets a stepper of its own (same mode and length bucket), with nothing
        allocated or captured yet. The copy's model is not built yet when this runs."""
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model, memo)
        twin.cache = self.cache.empty_copy(twin.model)
        twin.captures, twin._told_long, twin._runs = 0, False, {}
        return twin

    @property
    def mode(self) -> str:
        if self.graphs is not None:
            return "graph"
        return "eager" if self.compiler is None else "compile"

    @property
    def max_len(self) -> int:
        """The length bucket: positions of every decode's cache."""
        return self.cache.max_len

    def reserve(self, max_len: int | None = None, max_rows: int = 1) -> None:
        """Size the cache: max_len positions (the length bucket, rounded up to LEN_MULTIPLE, at
        most max_seq_len; None keeps it) and room for max_rows rows (bucketed). A new length
        drops every bucket and graph. ConfigError while a decode holds the cache."""
        if self.cache.busy:
            raise ConfigError("static step: the cache is in use by a decode")
        limit = self.model.config.max_seq_len
        if max_len is not None and bucket_len(max_len, limit) != self.max_len:
            self.release()
            self.cache = StaticCache(self.model, max_len, self.cache.static_addresses)
        self._room(bucket_rows(max_rows))

    def borrow(self, n_rows: int, max_len: int) -> StaticDecode | None:
        """A decode of n_rows rows with room for max_len positions on its row bucket of the
        cache (empty, every row starting at 0), or None (the caller then decodes eagerly) when
        max_len is over the length bucket or another decode holds the cache."""
        if max_len < 1:
            raise ConfigError(f"cache max_len must be >= 1, got {max_len}")
        if max_len > self.max_len:
            level = logging.DEBUG if self._told_long else logging.INFO
            self._told_long = True
            log.log(level, "a decode of %d positions is longer than the static step's %d: it "
                    "runs eagerly", max_len, self.max_len)
            return None
        if not self._room(bucket_rows(n_rows)):
            log.debug("static cache busy: eager decode")
            return None
        bucket = self.cache.bucket(bucket_rows(n_rows))
        bucket.starts.zero_()
        cache = KVCache(keys=bucket.keys, values=bucket.values, starts=bucket.starts)
        decode = StaticDecode(self, bucket, cache, n_rows)
        self.cache.lent_to = weakref.ref(decode)
        return decode

    def release(self) -> None:
        """Drop the cache, every bucket and graph (they are made again when needed)."""
        self.cache.release()
        self._runs.clear()

    def warm_up(self, max_rows: int, token_shape: tuple[int, ...] = (1,)) -> int:
        """Capture (or compile and run) the step of every row bucket up to max_rows rows, fed
        token_shape per row ((1,) for a Decoder, (R, 1) for a ColumnDecoder of R-row columns),
        on dummy tokens; buffers are left as they were. → graphs made now (0 if all exist, or
        for an eager static step). ConfigError while a decode holds the cache."""
        self.reserve(max_rows=max_rows)
        before = self.captures
        device = self.model.tok_emb.weight.device
        for rows in row_buckets(max_rows):
            bucket = self.cache.bucket(rows)
            buffer = self.cache.token_buffer((rows, *token_shape), device)
            if self.mode == "eager" or (rows, tuple(token_shape)) in self._runs:
                continue
            with plain_tensors():
                bucket.position.zero_()
                run = self._run_for(bucket, buffer, 0)
                if self.compiler is not None:  # compile now, and record (in this thread)
                    saved = Saved.of(bucket, 0)
                    for _ in range(WARM_UP_STEPS):
                        run()
                        saved.restore()
        return self.captures - before

    def _room(self, rows: int) -> bool:
        """Make sure the cache has `rows` rows (a larger one drops every bucket and graph);
        False while a decode holds it."""
        if self.cache.busy:
            return False
        if self.cache.rows < rows:
            self.release()
            self.cache.allocate(rows)
            log.debug("static cache: %d rows × %d positions, %.1f MiB", rows, self.max_len,
                      self.cache.nbytes / 2**20)
        return True

    def run(self, bucket: Bucket, tokens: torch.Tensor, at: int) -> torch.Tensor:
        """One step of `bucket` on its static inputs (tokens: its token buffer; the position
        holds `at`) → its logits; the bucket's graph is captured (or compiled) the first time."""
        run = self._runs.get((bucket.rows, tuple(tokens.shape[1:])))
        if run is None:
            with plain_tensors():
                run = self._run_for(bucket, tokens, at)
        return run()

    def _run_for(self, bucket: Bucket, tokens: torch.Tensor, at: int) -> Run:
        """How `bucket` steps on `tokens` from now on: its captured graph replayed, its compiled
        step, or the static step (eager); kept for the bucket."""
        def step() -> torch.Tensor:
            return self.forward(tokens, bucket.keys, bucket.values, bucket.position, bucket.starts)

        if self.graphs is not None:
            run = self._capture(step, bucket, at)
        elif self.compiler is not None:
            run = self._compiled(bucket, tokens)
        else:
            run = step
        self._runs[(bucket.rows, tuple(tokens.shape[1:]))] = run
        return run

    def _capture(self, step: Run, bucket: Bucket, at: int) -> Run:
        """Capture `step` at position `at` (its warm-up steps and the capture each reset what
        they wrote: the position and the entries at `at`) → a run that replays it."""
        saved = Saved.of(bucket, at)
        graph = self.graphs()
        output = graph.capture(step, saved.restore, WARM_UP_STEPS)
        saved.restore()  # the CPU stand-in's capture ran the step
        self.captures += 1
        log.debug("static step captured: %d rows, %d positions", bucket.rows, self.max_len)

        def replay() -> torch.Tensor:
            graph.replay()
            return output
        return replay

    def _compiled(self, bucket: Bucket, tokens: torch.Tensor) -> Run:
        fn = self.compiler(self.forward)
        self.captures += 1

        def run() -> torch.Tensor:
            if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
                torch.compiler.cudagraph_mark_step_begin()
            return fn(tokens, bucket.keys, bucket.values, bucket.position, bucket.starts)
        return run

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
    """One decode's use of a row bucket: its cache (length and starts as in KVCache; `rows`
    real rows of the bucket's), stepped one position at a time by `step`."""

    stepper: StaticStep
    bucket: Bucket
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
        buffer = self.stepper.cache.token_buffer((cache.batch_size, *tokens.shape[1:]),
                                                 tokens.device)
        buffer[: self.rows].copy_(tokens)
        logits = self.stepper.run(bucket, buffer, cache.length)
        cache.advance(1)
        self._position_at = cache.length
        return logits[: self.rows].clone()


def use_static_step(model: nn.Module, stepper: StaticStep | None) -> None:
    """Choose how `generate` feeds this model: through `stepper`, or eagerly (None)."""
    model.__dict__[_ATTR] = stepper


def default_static_step(model: nn.Module) -> StaticStep | None:
    """The stepper the mode (`step_mode`) asks for on the model's device, or None (off)."""
    device = model.tok_emb.weight.device
    mode = step_mode(device)
    if mode == "off":
        return None
    return StaticStep(model, graphs=graphs_for(device) if mode == "graph" else None,
                      compiler=cuda_graph_compiler if mode == "compile" else None)


def static_step_for(model: nn.Module) -> StaticStep | None:
    """The model's stepper, chosen at first use (`default_static_step`), or None for eager."""
    if _ATTR not in model.__dict__:
        use_static_step(model, default_static_step(model))
    return model.__dict__[_ATTR]
