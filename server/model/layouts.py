"""Token layouts: codes [B, K, F] ⇄ the sequences the decoder reads and writes.

Pure functions, batch-first, int64, each with its exact inverse. K codebooks (RVQ levels), F
frames, V codes per codebook (ids 0..V-1). Example used throughout: K = 3, F = 4, frame f of
level k written `fk` (so `21` is frame 2 of level 1):

    codes [K, F]        00 10 20 30
                        01 11 21 31
                        02 12 22 32

Vocabulary offsets
------------------
Several streams share one embedding table, each in its own slice of ids: `offsets([1024, 1024])`
→ `[0, 1024]`, and `add_offset(tokens, offset, vocab_size)` / `remove_offset(...)` move a stream
into and out of its slice (checking every id). Within an acoustic stream each level gets its own
V ids as well: `add_codebook_offsets(codes, V)` adds k·V to level k, so level k lies in
[k·V, (k+1)·V) and one table of K·V rows embeds every level.

flat — the AudioLM paper's order (K decoding steps per frame)
-------------------------------------------------------------
Levels interleaved per frame, with the per-level offsets: sequence [B, F·K] =

    00 01 02 10 11 12 20 21 22 30 31 32      (level k of frame f at position f·K + k)

Causality: the first n frames are exactly the first n·K tokens, so a prompt's sequence is a
prefix of its continuation's. A sequence whose length is not a multiple of K ends in an
incomplete frame; `unflatten` drops it (the incomplete frame's ids are `seq[:, flat_steps(F, K):]`
with F = `flat_frames(N, K)`). The token at position s belongs to level `s % K`.

delay — MusicGen's delay pattern (one decoding step per frame for all K levels)
-------------------------------------------------------------------------------
Level k shifted right by k steps; P marks `pad_id`. [B, K, F + K - 1]:

    step    0  1  2  3  4  5
    k = 0   00 10 20 30 P  P
    k = 1   P  01 11 21 31 P
    k = 2   P  P  02 12 22 32

One step predicts a whole column. Level k of frame f sits at step f + k, so when it is predicted,
every lower level of the same frame (at steps f..f+k-1) is already known — the RVQ dependency
the flat order keeps, at K times fewer steps. `delay_frame_index` gives the frame held at every
(k, step) (negative before the level starts, ≥ F after the codes end): the decoder uses it to know
which positions are pads, which are fixed by a prompt and which to sample. Causality: column s
holds only frames ≤ s, so the first n columns of `delay(codes)` depend on the first n frames only;
conversely the first n frames are complete after n + K - 1 columns (`delay_steps(n, K)`), and
`undelay` of a truncated sequence returns exactly its complete frames. Apply vocabulary offsets
before `delay` (so P stays P) and remove them after `undelay`.

parallel — room for SoundStorm-style decoding (not implemented)
---------------------------------------------------------------
SoundStorm (Borsos et al. 2023) fills the acoustic levels of a whole window at once by iterative
confidence-based unmasking, level by level, on the plain [B, K, F] grid: its layout is the
identity with a MASK id, plus a per-level unmasking schedule; it would live here as
`mask_level(codes, k, mask_id)`-style helpers, next to these two.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from continuo.server.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Vocabulary offsets
# ---------------------------------------------------------------------------------------------


def offsets(vocab_sizes: Sequence[int]) -> list[int]:
    """Start id of each stream in one shared table: offsets([1024, 2048, 8]) → [0, 1024, 3072].

    The table then needs `sum(vocab_sizes)` rows.
    """
    starts, total = [], 0
    for i, size in enumerate(vocab_sizes):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ConfigError(f"vocabulary size of stream {i} must be an integer >= 1: {size!r}")
        starts.append(total)
        total += int(size)
    return starts


def _check_range(ids: torch.Tensor, low: int, high: int, what: str) -> None:
    """Raise ValueError unless ids is an integer tensor with every value in [low, high)."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{what} must be an integer tensor, got {ids.dtype}")
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < low or hi >= high:
        raise ValueError(f"{what} must lie in [{low}, {high}), found values in [{lo}, {hi}]")


def _check_shape(x: torch.Tensor, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def add_offset(tokens: torch.Tensor, offset: int, vocab_size: int) -> torch.Tensor:
    """Tokens of one stream (any shape, values in [0, vocab_size)) → ids in the stream's slice."""
    _check_range(tokens, 0, vocab_size, "tokens")
    return tokens.long() + offset


def remove_offset(ids: torch.Tensor, offset: int, vocab_size: int) -> torch.Tensor:
    """Inverse of `add_offset`: ids in [offset, offset + vocab_size) → tokens in [0, vocab_size)."""
    _check_range(ids, offset, offset + vocab_size, f"ids of the stream at offset {offset}")
    return ids.long() - offset


def _level_offsets(n_codebooks: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """[K, 1] int64: k·V for level k, broadcastable against [B, K, F]."""
    return (torch.arange(n_codebooks, device=device, dtype=torch.long) * vocab_size)[:, None]


def add_codebook_offsets(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """codes [B, K, F] in [0, V) → ids [B, K, F] with level k in [k·V, (k+1)·V)."""
    _check_shape(codes, 3, "codes [B, K, F]")
    _check_range(codes, 0, vocab_size, "codes")
    return codes.long() + _level_offsets(codes.shape[1], vocab_size, codes.device)


def remove_codebook_offsets(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Inverse of `add_codebook_offsets`: ids [B, K, F] → codes [B, K, F] in [0, V).

    Raises ValueError when an id of level k lies outside [k·V, (k+1)·V).
    """
    _check_shape(ids, 3, "ids [B, K, F]")
    codes = ids.long() - _level_offsets(ids.shape[1], vocab_size, ids.device)
    bad = (codes < 0) | (codes >= vocab_size)
    if bool(bad.any()):
        b, k, f = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"ids of level k must lie in [k·{vocab_size}, (k+1)·{vocab_size}): "
            f"item {b} level {k} frame {f} holds {int(ids[b, k, f])}"
        )
    return codes


# ---------------------------------------------------------------------------------------------
# flat: levels interleaved per frame
# ---------------------------------------------------------------------------------------------


def flatten(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """codes [B, K, F] in [0, V) → seq [B, F·K], seq[:, f·K + k] = codes[:, k, f] + k·V."""
    ids = add_codebook_offsets(codes, vocab_size)  # [B, K, F]
    n_batch, n_codebooks, n_frames = ids.shape
    return ids.transpose(1, 2).reshape(n_batch, flat_steps(n_frames, n_codebooks))


def unflatten(seq: torch.Tensor, n_codebooks: int, vocab_size: int) -> torch.Tensor:
    """seq [B, N] → codes [B, K, N // K]; an incomplete last frame (N % K tokens) is dropped."""
    _check_shape(seq, 2, "seq [B, N]")
    n_frames = flat_frames(seq.shape[1], n_codebooks)
    complete = seq[:, : flat_steps(n_frames, n_codebooks)]
    frames = complete.reshape(seq.shape[0], n_frames, n_codebooks)  # [B, F, K]
    return remove_codebook_offsets(frames.transpose(1, 2), vocab_size)


def flat_steps(n_frames: int, n_codebooks: int) -> int:
    """Sequence length of n_frames frames in the flat layout: F·K."""
    return n_frames * n_codebooks


def flat_frames(n_tokens: int, n_codebooks: int) -> int:
    """Complete frames in a flat sequence of n_tokens: N // K."""
    if n_codebooks < 1:
        raise ValueError(f"n_codebooks must be >= 1, got {n_codebooks}")
    return n_tokens // n_codebooks


def flat_codebook(position: int, n_codebooks: int) -> int:
    """The level the flat token at `position` belongs to: position % K."""
    return position % n_codebooks


# ---------------------------------------------------------------------------------------------
# delay: level k shifted right by k steps
# ---------------------------------------------------------------------------------------------


def delay_steps(n_frames: int, n_codebooks: int) -> int:
    """Columns of the delay layout of F frames: F + K - 1 (K - 1 all-pad columns at F = 0)."""
    return n_frames + n_codebooks - 1


def delayed_frames(n_steps: int, n_codebooks: int) -> int:
    """Complete frames (every level present) in n_steps delay columns: max(S - K + 1, 0)."""
    return max(n_steps - n_codebooks + 1, 0)


def delay_frame_index(
    n_codebooks: int, n_steps: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[K, S] int64: the frame held by level k at step s, s - k. K = 3, S = 6:

        step    0  1  2  3  4  5
        k = 0   0  1  2  3  4  5
        k = 1  -1  0  1  2  3  4
        k = 2  -2 -1  0  1  2  3

    For codes of F frames, position (k, s) holds a code iff 0 ≤ index < F, else the pad; a
    prompt of P frames fixes the positions with 0 ≤ index < P. So `index >= 0` is "this level
    has started" during open-ended generation, and `(index >= 0) & (index < F)` is the loss mask.
    """
    steps = torch.arange(n_steps, device=device, dtype=torch.long)
    levels = torch.arange(n_codebooks, device=device, dtype=torch.long)
    return steps[None, :] - levels[:, None]


def delay(codes: torch.Tensor, pad_id: int) -> torch.Tensor:
    """codes [B, K, F] → delayed [B, K, F + K - 1], delayed[:, k, f + k] = codes[:, k, f].

    Every other position holds pad_id (k leading pads and K - 1 - k trailing pads on level k).
    """
    _check_shape(codes, 3, "codes [B, K, F]")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    n_batch, n_codebooks, n_frames = codes.shape
    if n_codebooks < 1:
        raise ValueError("codes must have at least one codebook (K >= 1)")
    n_steps = delay_steps(n_frames, n_codebooks)
    out = codes.new_full((n_batch, n_codebooks, n_steps), pad_id, dtype=torch.long)
    for k in range(n_codebooks):
        out[:, k, k : k + n_frames] = codes[:, k]
    return out


def undelay(delayed: torch.Tensor) -> torch.Tensor:
    """delayed [B, K, S] → codes [B, K, max(S - K + 1, 0)], codes[:, k, f] = delayed[:, k, f + k].

    The exact inverse of `delay`; on a truncated sequence it returns the complete frames only
    (those whose K levels are all present), and never reads a pad position.
    """
    _check_shape(delayed, 3, "delayed [B, K, S]")
    _, n_codebooks, n_steps = delayed.shape
    if n_codebooks < 1:
        raise ValueError("delayed must have at least one codebook (K >= 1)")
    n_frames = delayed_frames(n_steps, n_codebooks)
    levels = [delayed[:, k, k : k + n_frames] for k in range(n_codebooks)]
    return torch.stack(levels, dim=1).long()
