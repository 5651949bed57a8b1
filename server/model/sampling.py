"""Sampling the next token from a decoder's logits: temperature, top-k, top-p, greedy.

Settings travel with each job (`SamplingParams`), never on the shared model; randomness comes
only from the `torch.Generator`s the caller passes, never from torch's global RNG. One call
takes a batch of rows, each batch item with its own params and, if wanted, its own generator, so
several jobs can share one decoding step and each job's seed still reproduces its own tokens.

Order of operations, per row: restrict to the `allowed` ids → divide by the temperature → keep
the top_k most likely → keep the smallest set of those whose mass is ≥ top_p (nucleus) → draw.
Temperature 0 is greedy: the first most likely allowed id (exactly `argmax`).

The draw is an exponential race: with E_i ~ Exp(1) drawn per id, argmax_i p_i / E_i picks id i
with probability p_i exactly. The noise is drawn per id (V values per row, whatever the params),
so filtering only removes candidates: an id that is kept wins the same races whether or not
other rows of the batch filter, and a filtered-out id can never come back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from continuo.server.errors import ConfigError
from continuo.server.model.device import host_values

# Top-p compares cumulative float32 masses with p; this slack makes a set whose mass is p up to
# rounding (0.5 + 0.3 summing to 0.79999995) count as reaching p = 0.8, as the maths says.
_TOP_P_SLACK = 1e-6
T = TypeVar("T")


@dataclass(frozen=True)
class SamplingParams:
    """How one job samples one stage. Checked at construction (ConfigError naming the value).

    temperature: ≥ 0; 0 is greedy, 1 samples the model's distribution, > 1 flattens it.
    top_k: keep the k most likely ids; 0 turns it off.
    top_p: keep the smallest set of most likely ids whose probability mass is ≥ top_p, in (0, 1];
        1 turns it off.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < math.inf:
            raise ConfigError(f"sampling temperature must be a finite number >= 0, got {t!r}")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"sampling top_k must be an integer >= 0 (0 = off), got {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ConfigError(f"sampling top_p must be a number in (0, 1] (1 = off), got {p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


Allowed = torch.Tensor | tuple[int, int]
Generators = torch.Generator | Sequence[torch.Generator]


def pick_rows(value: T, rows: Sequence[int]) -> T:
    """The per-row settings of `rows` from one setting for every row (returned as is: params,
    a generator, None) or a sequence of one per row."""
    if value is None or isinstance(value, (SamplingParams, torch.Generator)):
        return value
    return [value[b] for b in rows]


@dataclass(frozen=True)
class _Rows:
    """The batch's params as per-row tensors of the logits' row shape ([B] or [B, K])."""

    items: list[SamplingParams]  # one per batch item
    temperature: torch.Tensor  # float32; 1 for greedy items (they keep only their argmax)
    top_k: torch.Tensor  # int64; V for "off", 1 for greedy items
    top_p: torch.Tensor  # float32
    greedy: torch.Tensor  # bool


def sample(
    logits: torch.Tensor,
    params: SamplingParams | Sequence[SamplingParams],
    generator: Generators,
    allowed: Allowed | None = None,
) -> torch.Tensor:
    """logits [B, V] or [B, K, V] → token ids [B] or [B, K] (int64, on the logits' device).

    params: one SamplingParams for every row, or a sequence of B (one per batch item, shared by
        its K codebooks).
    generator: one torch.Generator for the batch, or a sequence of B (one per job: then item b's
        tokens depend only on its own logits, params and generator, never on its neighbours; a
        greedy item draws nothing from its generator). On the logits' device.
    allowed: None (every id), a half-open id range (start, stop) such as one stream's slice of a
        shared vocabulary, or a bool mask broadcastable to the logits ([V], [K, V], [B, K, V]...)
        with True where an id may be drawn. Every row must allow at least one id.
    """
    if logits.ndim not in (2, 3) or logits.shape[-1] < 1:
        raise ValueError(f"logits must be [B, V] or [B, K, V], V >= 1: got {tuple(logits.shape)}")
    scores = _restrict(logits.float(), allowed)
    rows = _row_params(params, scores.shape, scores.device)
    greedy_tokens = scores.argmax(dim=-1)
    if all(p.greedy for p in rows.items):
        return greedy_tokens
    noise = _noise(scores, generator, rows.items)  # [..., V], per id
    candidates = _n_candidates(rows.items, scores.shape[-1])
    if candidates < scores.shape[-1]:  # every row keeps at most its top_k: look at those only
        scores, ids = torch.topk(scores, candidates, dim=-1)
    elif any(_filters(p, scores.shape[-1]) for p in rows.items):
        scores, ids = torch.sort(scores, dim=-1, descending=True, stable=True)
    else:  # no filtering at all: no sort needed
        ids = None
    probs, keep = _filter(scores, rows, ranked=ids is not None)
    if ids is not None:
        noise = noise.gather(-1, ids)
    race = torch.where(keep, probs / noise.clamp_min(torch.finfo(noise.dtype).tiny), -1.0)
    drawn = race.argmax(dim=-1, keepdim=True)
    tokens = (drawn if ids is None else ids.gather(-1, drawn)).squeeze(-1)
    return torch.where(rows.greedy, greedy_tokens, tokens)


def _n_candidates(items: list[SamplingParams], vocab: int) -> int:
    """How many most likely ids any row may keep: the largest top_k, or V if a row has none."""
    if any(p.top_k == 0 and not p.greedy for p in items):
        return vocab
    return min(max(1 if p.greedy else p.top_k for p in items), vocab)


def _filters(params: SamplingParams, vocab: int) -> bool:
    """Whether a (non-greedy) row drops ids by top-k or top-p."""
    return not params.greedy and (0 < params.top_k < vocab or params.top_p < 1)


def _filter(scores: torch.Tensor, rows: _Rows, ranked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [..., N] → (probs, keep), both [..., N]: softmax at the row's temperature, zero
    beyond top_k, and the ids that may be drawn. Top-k and top-p need `ranked` (descending)
    scores; unranked scores are only passed when no row filters.
    """
    # Subtracting the row's max first keeps tiny temperatures finite: (s - max) / t <= 0.
    scaled = (scores - scores.amax(dim=-1, keepdim=True)) / rows.temperature[..., None]
    probs = torch.softmax(scaled, dim=-1)
    keep = scores > -math.inf
    if not ranked:
        return probs, keep
    rank = torch.arange(scores.shape[-1], device=scores.device)
    keep &= rank < rows.top_k[..., None]
    probs = torch.where(keep, probs, 0.0)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    p = rows.top_p[..., None]
    nucleus = mass_before < (p - _TOP_P_SLACK) * probs.sum(dim=-1, keepdim=True)
    keep &= nucleus | (p >= 1) | (rank == 0)  # the most likely id always survives
    return probs, keep


def _noise(
    scores: torch.Tensor, generator: Generators, items: list[SamplingParams]
) -> torch.Tensor:
    """Exp(1) noise shaped like scores, one value per id, from the caller's generator(s)."""
    if isinstance(generator, torch.Generator):
        return torch.empty_like(scores).exponential_(generator=generator)
    generators = list(generator)
    if len(generators) != len(items):
        raise ValueError(f"generator must be one torch.Generator or a sequence of {len(items)}")
    noise = torch.ones_like(scores)
    for row, gen, params in zip(noise, generators, items, strict=True):
        if not params.greedy:
            row.exponential_(generator=gen)
    return noise


def _restrict(scores: torch.Tensor, allowed: Allowed | None) -> torch.Tensor:
    """Set the scores of ids that may not be drawn to -inf; check every row keeps one (a range
    is checked on the host; a mask on the device, which waits for it: decoding loops pass
    ranges)."""
    if allowed is None:
        return scores
    vocab = scores.shape[-1]
    if isinstance(allowed, tuple):
        start, stop = allowed
        if not 0 <= start < stop <= vocab:
            raise ValueError(f"allowed range {allowed} must satisfy 0 <= start < stop <= {vocab}")
        ids = torch.arange(vocab, device=scores.device)
        return scores.masked_fill((ids < start) | (ids >= stop), -math.inf)
    if allowed.dtype != torch.bool:
        raise ValueError(f"an allowed mask must be a bool tensor, got {allowed.dtype}")
    mask = allowed.to(scores.device)
    try:
        mask = torch.broadcast_to(mask, scores.shape)
    except RuntimeError as err:
        raise ValueError(
            f"allowed mask {tuple(mask.shape)} does not broadcast to logits {tuple(scores.shape)}"
        ) from err
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("the allowed mask leaves a row with no id to draw")
    return scores.masked_fill(~mask, -math.inf)


def _row_params(
    params: SamplingParams | Sequence[SamplingParams], shape: torch.Size, device: torch.device
) -> _Rows:
    """The params of a batch of logits `shape` ([B, V] or [B, K, V]) as per-row tensors (made
    once per set of params and shape, then reused: no host → device copy at every step)."""
    batch = shape[0]
    items = [params] * batch if isinstance(params, SamplingParams) else list(params)
    if len(items) != batch or not all(isinstance(p, SamplingParams) for p in items):
        raise ValueError(f"params must be one SamplingParams or a sequence of {batch} of them")
    return _rows(tuple(items), tuple(shape), device)


@functools.lru_cache(maxsize=256)
def _rows(items: tuple[SamplingParams, ...], shape: tuple[int, ...], device: torch.device
          ) -> _Rows:
    batch, row_shape = shape[0], shape[:-1]
    per_item = (1,) * (len(row_shape) - 1)

    def rows(values: list, dtype: torch.dtype) -> torch.Tensor:
        return host_values(values, device, dtype).view(batch, *per_item).expand(row_shape)

    return _Rows(
        items=list(items),
        temperature=rows([1.0 if p.greedy else p.temperature for p in items], torch.float32),
        top_k=rows([1 if p.greedy else p.top_k or shape[-1] for p in items], torch.long),
        top_p=rows([float(p.top_p) for p in items], torch.float32),
        greedy=rows([p.greedy for p in items], torch.bool),
    )
