"""Autoregressive decoding for the stages: prepare (prefill) → step (sample, feed) → result.

State is explicit (`DecodeState`: the KV cache, the logits of the last fed position, the decoder
calls made); the model holds none, and sampling params and generators come with each call. Two
loops, one per kind of sequence:

- `decode_tokens`: one token per position (the semantic stage, the flat layout). Token i may only
  be drawn from its own stream's id range (`allowed[i]`); greedy at temperature 0.
- `decode_columns`: one column of K levels per position (the delay layout, `ColumnDecoder`).
  Column s holds level k of frame s − k: a pad before the level starts or after the last frame,
  the prompt's code for a prompt frame, else a sampled code. So the K − 1 columns after a prompt
  of P frames still carry the prompt's upper levels, and N new frames take N + K − 1 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.model.kv_cache import KVCache
from continuo.server.model.layouts import delay_frame_index
from continuo.server.model.sampling import Generators, SamplingParams, sample

Params = SamplingParams | Sequence[SamplingParams]


@dataclass
class DecodeState:
    """cache: the KV cache of everything fed so far; logits: of the last fed position, [B, V]
    (tokens) or [B, K, V] (columns); n_steps: decoder calls made (the prefill counts one)."""

    cache: KVCache
    logits: torch.Tensor
    n_steps: int = 0


def prepare(model: nn.Module, prefix: torch.Tensor, n_new: int) -> DecodeState:
    """Prefill `prefix` ([B, T] or [B, R, T]) into a cache with room for n_new more positions."""
    length = prefix.shape[-1] + n_new
    limit = model.config.max_seq_len
    if prefix.shape[-1] < 1 or length > limit:
        raise ConfigError(
            f"generation needs {prefix.shape[-1]} prompt + {n_new} new positions (at least one "
            f"prompt position) but the decoder holds at most max_seq_len {limit}"
        )
    cache = model.new_cache(prefix.shape[0], length)
    logits, cache = model.step(prefix, cache)
    return DecodeState(cache=cache, logits=logits[..., -1, :], n_steps=1)


def feed(model: nn.Module, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
    """Feed one position ([B, 1] token or [B, R, 1] column) and keep its logits."""
    logits, cache = model.step(tokens, state.cache)
    return DecodeState(cache=cache, logits=logits[..., -1, :], n_steps=state.n_steps + 1)


def _check_generator(params: Params, generator: Generators | None) -> None:
    items = [params] if isinstance(params, SamplingParams) else list(params)
    if generator is None and not all(p.greedy for p in items):
        raise ValueError("sampling at temperature > 0 needs a torch.Generator (seeded by the job)")


@torch.no_grad()
def decode_tokens(
    model: nn.Module,
    prefix: torch.Tensor,
    allowed: Sequence[tuple[int, int]],
    params: Params,
    generator: Generators | None,
) -> tuple[torch.Tensor, DecodeState]:
    """prefix [B, T0] ids → the next len(allowed) ids [B, N], token i drawn from allowed[i]."""
    _check_generator(params, generator)
    state = prepare(model, prefix, max(len(allowed) - 1, 0))
    out = []
    for i, slice_i in enumerate(allowed):
        token = sample(state.logits, params, generator, allowed=slice_i)  # [B]
        out.append(token)
        if i + 1 < len(allowed):
            state = feed(model, state, token[:, None])
    return torch.stack(out, dim=1) if out else prefix.new_zeros(prefix.shape[0], 0), state


@dataclass(frozen=True)
class ColumnIds:
    """How a stage's predicted levels become column ids: level k's code c is id
    `offset + k·level_vocab + c`; pad_id fills empty slots and rows ≥ K of an R-row column."""

    offset: int
    level_vocab: int
    pad_id: int
    n_rows: int


@torch.no_grad()
def decode_columns(
    model: nn.Module,
    prefix: torch.Tensor,
    known: torch.Tensor,
    n_new: int,
    ids: ColumnIds,
    params: Params,
    generator: Generators | None,
) -> tuple[torch.Tensor, DecodeState]:
    """The next n_new frames [B, K, N] (codes 0..V-1) in the delay layout.

    prefix [B, R, T0]: the conditioning columns and the delay columns 0..P-1 of the prompt;
    known [B, K, P]: the prompt's codes (0..V-1), which fix the slots of prompt frames.
    """
    _check_generator(params, generator)
    batch, n_levels, n_known = known.shape
    n_cols = n_new + n_levels - 1 if n_new else 0
    state = prepare(model, prefix, max(n_cols - 1, 0))
    frame = delay_frame_index(n_levels, n_known + n_cols, known.device)[:, n_known:]  # [K, S]
    out = known.new_zeros(batch, n_levels, n_new)
    level_ids = torch.arange(n_levels, device=known.device)
    for s in range(n_cols):
        f = frame[:, s]  # [K] the frame each level holds in this column
        codes = sample(state.logits, params, generator) if bool((f >= n_known).any()) else None
        column = torch.full((batch, ids.n_rows), ids.pad_id, dtype=torch.long, device=known.device)
        for k in range(n_levels):
            fk = int(f[k])
            if 0 <= fk < n_known:
                code = known[:, k, fk]
            elif n_known <= fk < n_known + n_new:
                code = codes[:, k]
                out[:, k, fk - n_known] = code
            else:
                continue
            column[:, k] = ids.offset + int(level_ids[k]) * ids.level_vocab + code
        if s + 1 < n_cols:
            state = feed(model, state, column[:, :, None])
    return out, state
