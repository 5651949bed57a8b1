"""Autoregressive decoding for the stages: prepare (prefill) → step (sample, feed) → result.

State is explicit (`DecodeState`: the KV cache, the logits of the last fed position, the decoder
calls made); the model holds none, and sampling params and generators come with each call. Two
loops, one per kind of sequence:

- `decode_token_rows`: one token per position (the semantic stage, the flat layout). Token i may
  only be drawn from its own stream's id range (`allowed[i]`); greedy at temperature 0.
- `decode_column_rows`: one column of K levels per position (the delay layout, `ColumnDecoder`).
  Column s holds level k of frame s − k: a pad before the level starts or after the last frame,
  the prompt's code for a prompt frame, else a sampled code. So the K − 1 columns after a prompt
  of P frames still carry the prompt's upper levels, and N new frames take N + K − 1 columns.

Both decode a *ragged batch*: row b (one job) has its own prefix length, prompt, number of new
tokens, sampling params and generator, and every step is one batched forward for all rows. Rows
are right-aligned in the cache (`KVCache.place`, `starts`), which the relative positions make
exact; a row that has all its tokens rides along (its outputs dropped, its generator untouched)
until the longest is done. A row's tokens depend only on its own inputs and generator: with the
same seed a job gets the same tokens alone or beside others (up to float rounding in batched
matrix products, which would have to tie two candidates to change a draw). No device → host
copy happens in the loops: which rows are active is known from the Python ints given.
Where the model has a static step (on CUDA by default, see static_step.py), `prepare_rows`
prefills into that step's bucketed cache and `feed` steps through it (same logits).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.model.device import host_values
from continuo.server.model.kv_cache import KVCache
from continuo.server.model.sampling import Generators, SamplingParams, sample
from continuo.server.model.static_step import StaticDecode, static_step_for

Params = SamplingParams | Sequence[SamplingParams]
W = TypeVar("W")
_GREEDY = SamplingParams(temperature=0.0)


@dataclass
class DecodeState:
    """cache: the KV cache of everything fed so far; logits: of the last fed position, [B, V]
    (tokens) or [B, K, V] (columns); n_steps: decoder calls made (the prefill counts one);
    static: where steps go through a static-shape step (static_step.py), its decode (the cache
    is then that bucket's, with padding rows)."""

    cache: KVCache
    logits: torch.Tensor
    n_steps: int = 0
    static: StaticDecode | None = None


def prepare_rows(model: nn.Module, prefixes: Sequence[torch.Tensor], n_new: int) -> DecodeState:
    """Prefill B prefixes ([T_b] or [R, T_b], lengths may differ) into one cache with room for
    n_new more positions, right-aligned: rows of equal length are prefilled together, each group
    alone (as it would be without the others), then placed in the shared cache."""
    lengths = [p.shape[-1] for p in prefixes]
    longest = max(lengths)
    limit = model.config.max_seq_len
    if min(lengths) < 1 or longest + n_new > limit:
        raise ConfigError(
            f"generation needs {longest} prompt + {n_new} new positions (at least one "
            f"prompt position) but the decoder holds at most max_seq_len {limit}"
        )
    stepper = static_step_for(model)
    static = None if stepper is None else stepper.borrow(len(prefixes), longest + n_new)
    if static is None and len(set(lengths)) == 1:  # uniform: prefilled straight into the cache
        cache = model.new_cache(len(prefixes), longest + n_new)
        logits, cache = model.step(torch.stack(list(prefixes)), cache)
        return DecodeState(cache=cache, logits=logits[..., -1, :], n_steps=1)
    cache = model.new_cache(len(prefixes), longest + n_new) if static is None else static.cache
    cache.length = longest
    last: list[torch.Tensor | None] = [None] * len(prefixes)
    for length in sorted(set(lengths)):
        rows = [b for b, n in enumerate(lengths) if n == length]
        part = model.new_cache(len(rows), length)
        logits, part = model.step(torch.stack([prefixes[b] for b in rows]), part)
        cache.place(rows, part)
        for i, b in enumerate(rows):
            last[b] = logits[i, ..., -1, :]
    return DecodeState(cache=cache, logits=torch.stack(last), n_steps=1, static=static)


def window_rounds(plans: Sequence[Sequence[W]]) -> Iterator[tuple[list[int], list[tuple[int, W]]]]:
    """Rows whose work comes in windows (each conditioned on the one before) decoded together:
    round r yields the rows that have an r-th window, and (row, window) for each of them."""
    for r in range(max(map(len, plans), default=0)):
        rows = [b for b, plan in enumerate(plans) if r < len(plan)]
        yield rows, [(b, plans[b][r]) for b in rows]


def feed(model: nn.Module, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
    """Feed one position ([B, 1] token or [B, R, 1] column) and keep its logits."""
    if state.static is not None:
        return DecodeState(cache=state.cache, logits=state.static.step(tokens),
                           n_steps=state.n_steps + 1, static=state.static)
    logits, cache = model.step(tokens, state.cache)
    return DecodeState(cache=cache, logits=logits[..., -1, :], n_steps=state.n_steps + 1)


def _check_generator(params: Params, generator: Generators | None) -> None:
    items = [params] if isinstance(params, SamplingParams) else list(params)
    if generator is None and not all(p.greedy for p in items):
        raise ValueError("sampling at temperature > 0 needs a torch.Generator (seeded by the job)")


def _sample_rows(logits: torch.Tensor, active: list[int], params: Params,
                 generator: Generators | None, allowed: tuple[int, int] | None = None
                 ) -> torch.Tensor:
    """Sample logits [B, V] or [B, K, V] → ids [B] or [B, K], drawing only for the active rows:
    the others are taken greedily (their ids are not used), which draws nothing from their
    generators. No row is gathered or scattered, so nothing is copied to the device."""
    if len(active) < logits.shape[0]:
        items = [params] * logits.shape[0] if isinstance(params, SamplingParams) else params
        keep = set(active)
        params = [p if b in keep else _GREEDY for b, p in enumerate(items)]
    return sample(logits, params, generator, allowed=allowed)


@torch.no_grad()
def decode_token_rows(
    model: nn.Module,
    prefixes: Sequence[torch.Tensor],
    allowed: Sequence[tuple[int, int]],
    n_new: Sequence[int],
    params: Params,
    generator: Generators | None,
) -> list[torch.Tensor]:
    """B prefixes [T_b] of ids → row b's next n_new[b] ids [n_b], token i drawn from allowed[i]
    (len(allowed) ≥ max n_new). params and generator: one for all rows, or one per row."""
    _check_generator(params, generator)
    longest = max(n_new, default=0)
    if len(allowed) < longest:
        raise ValueError(f"{len(allowed)} allowed ranges for up to {longest} new tokens")
    state = prepare_rows(model, prefixes, max(longest - 1, 0))
    tokens = []
    for i in range(longest):
        active = [b for b, n in enumerate(n_new) if i < n]
        token = _sample_rows(state.logits, active, params, generator, allowed[i])  # [B]
        tokens.append(token)
        if i + 1 < longest:
            state = feed(model, state, token[:, None])
    out = torch.stack(tokens, dim=1) if tokens else None  # [B, max n_new]
    return [prefixes[b].new_zeros(0) if out is None else out[b, :n] for b, n in enumerate(n_new)]


@dataclass(frozen=True)
class ColumnIds:
    """How a stage's predicted levels become column ids: level k's code c is id
    `offset + k·level_vocab + c`; pad_id fills empty slots and rows ≥ K of an R-row column."""

    offset: int
    level_vocab: int
    pad_id: int
    n_rows: int


@torch.no_grad()
def decode_column_rows(
    model: nn.Module,
    prefixes: Sequence[torch.Tensor],
    known: Sequence[torch.Tensor],
    n_new: Sequence[int],
    ids: ColumnIds,
    params: Params,
    generator: Generators | None,
) -> list[torch.Tensor]:
    """Row b's next n_new[b] frames [K, n_b] (codes 0..V-1) in the delay layout.

    prefixes: B columns [R, T0_b], the conditioning and the delay columns 0..P_b-1 of the
    prompt; known: B prompt codes [K, P_b] (0..V-1), which fix the slots of prompt frames.
    """
    _check_generator(params, generator)
    n_levels = known[0].shape[0]
    n_cols = [n + n_levels - 1 if n else 0 for n in n_new]
    longest = max(n_cols, default=0)
    state = prepare_rows(model, prefixes, max(longest - 1, 0))
    slots = _DelaySlots(known, n_new, ids)
    sampled = []  # per column s: [B, K] codes drawn (0 for rows done)
    for s in range(longest):
        active = [b for b, n in enumerate(n_cols) if s < n]
        codes = _sample_rows(state.logits, active, params, generator)  # [B, K]
        sampled.append(codes)
        if s + 1 < longest:
            state = feed(model, state, slots.column(s, codes)[:, :, None])
    if not sampled:
        return [k.new_zeros(n_levels, 0) for k in known]
    frames = slots.frames(torch.stack(sampled, dim=2))  # [B, K, max n_new]
    return [frames[b, :, :n] for b, n in enumerate(n_new)]


class _DelaySlots:
    """What fills each slot of a delay column, for a ragged batch of prompts (see the module
    doc): column s after a prompt of P_b frames holds level k of frame P_b + s − k."""

    def __init__(self, known: Sequence[torch.Tensor], n_new: Sequence[int], ids: ColumnIds):
        device = known[0].device
        self.ids, self.n_levels = ids, known[0].shape[0]
        self.n_prompt = max(k.shape[1] for k in known)
        # prompts right-aligned [B, K, P]: frame P_b + d of row b sits at index P + d
        self.known = torch.stack([F.pad(k, (self.n_prompt - k.shape[1], 0)) for k in known])
        self.lengths = host_values([k.shape[1] for k in known], device)[:, None]  # [B, 1]
        self.n_new = host_values(list(n_new), device)[:, None]  # [B, 1]
        self.levels = torch.arange(self.n_levels, device=device)  # [K]

    def column(self, s: int, codes: torch.Tensor) -> torch.Tensor:
        """Column s (after the prompt's) of ids [B, R], codes [B, K] the ones drawn for it."""
        d = s - self.levels  # [K]: frame − P_b of each level's slot
        index = (self.n_prompt + d).clamp(0, max(self.n_prompt - 1, 0))
        known = (self.known[:, self.levels, index] if self.n_prompt
                 else torch.zeros_like(codes))  # [B, K]
        is_known = (d < 0) & (self.lengths + d >= 0)
        is_new = (d >= 0) & (d < self.n_new)
        code = torch.where(is_new, codes, known)
        column = torch.where(is_known | is_new,
                             self.ids.offset + self.levels * self.ids.level_vocab + code,
                             self.ids.pad_id)  # [B, K]
        return F.pad(column, (0, self.ids.n_rows - self.n_levels), value=self.ids.pad_id)

    def frames(self, sampled: torch.Tensor) -> torch.Tensor:
        """Codes drawn per column [B, K, S] → new frames [B, K, S − K + 1]: frame f of level k
        was drawn in column f + k."""
        n_frames = sampled.shape[2] - self.n_levels + 1
        index = torch.arange(n_frames, device=sampled.device)[None, :] + self.levels[:, None]
        return sampled.gather(2, index[None].expand(sampled.shape[0], -1, -1))
