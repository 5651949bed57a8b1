"""The decoder's key/value cache: explicit, typed decoding state, preallocated once.

One `KVCache` holds the keys and values of every layer for one batch of sequences being decoded:

    keys, values  [L, B, nh, max_len, hs]   (layers, batch rows, key/value heads, positions,
                                              head size)
    length        how many positions are filled (the same for every row and layer)
    starts        [B] int64 or None: a ragged batch (rows of different lengths, e.g. several jobs
                  decoded together) is right-aligned, row b holding positions starts[b] ..
                  length - 1; the decoder masks the keys before a row's start. None: every row
                  starts at 0.

The model never stores decoding state; a caller creates a cache with `Decoder.new_cache`, passes
it to `Decoder.step`, and may keep several caches for one model (one per job). `step` writes the
new positions in place and advances `length`; nothing is reallocated while decoding, so a step
costs the same at position 1,500 as at position 100 apart from attention over the longer past.

Right-aligning is exact because positions are relative: a row's query sees its keys at the same
distances as it would alone, and its masked keys get zero attention weight.

Because the decoder's positions are relative (a T5 bias over the distance between a query and a
key, nothing stored in the keys), the cache can be cut in two ways without recomputing anything:

    truncate(n)   keep the first n positions  (roll back: undo speculative or rejected tokens)
    keep_last(n)  keep the last n positions, moved to the front  (slide a bounded context window)

After `keep_last`, the kept keys of layer 0 are exactly what a fresh prefill of the kept tokens
would give; deeper layers' keys still carry what their tokens attended to before the cut (as in
Transformer-XL's memory), so a slid window is close to, not identical to, a fresh prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from continuo.server.errors import ConfigError
from continuo.server.model.device import host_values


@dataclass
class KVCache:
    """Keys and values [L, B, nh, max_len, hs] of every layer, the filled `length` and, for a
    ragged batch, each row's first position `starts` [B]."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0
    starts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keys.dim() != 5 or self.keys.shape != self.values.shape:
            raise ConfigError(
                f"KV cache keys and values must both be [L, B, nh, max_len, hs], got "
                f"{tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )
        self._check_length(self.length)
        if self.starts is not None and tuple(self.starts.shape) != (self.batch_size,):
            raise ConfigError(f"KV cache starts must be [B={self.batch_size}], got "
                              f"{tuple(self.starts.shape)}")

    @classmethod
    def empty(
        cls,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """A cache with room for `max_len` positions, nothing filled."""
        shape = (n_layers, batch_size, n_heads, max_len, head_size)
        keys = torch.zeros(shape, device=device, dtype=dtype)
        return cls(keys=keys, values=torch.zeros_like(keys))

    @property
    def n_layers(self) -> int:
        return self.keys.shape[0]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def n_heads(self) -> int:
        return self.keys.shape[2]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def head_size(self) -> int:
        return self.keys.shape[4]

    @property
    def free(self) -> int:
        """Positions left before the cache is full."""
        return self.max_len - self.length

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (B, nh, T_new, hs) of one layer after the filled positions.

        Returns that layer's keys and values (B, nh, length + T_new, hs), views into the cache.
        `length` does not move here (every layer writes at the same positions); the model calls
        `advance(T_new)` once all layers are written.
        """
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ConfigError(
                f"KV cache full: {self.length} positions filled + {k.shape[2]} new > "
                f"max_len {self.max_len}; truncate or keep_last first, or make a larger cache"
            )
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def key_mask(self, n_keys: int) -> torch.Tensor | None:
        """[B, 1, 1, n_keys] bool, True for keys before their row's start (not that row's), or
        None when every row starts at 0."""
        if self.starts is None:
            return None
        positions = torch.arange(n_keys, device=self.starts.device)
        return (positions[None, :] < self.starts[:, None])[:, None, None, :]

    def place(self, rows: list[int], part: KVCache) -> None:
        """Copy a cache of len(rows) rows, prefilled alone, into `rows`, right-aligned so that its
        last position is this cache's last filled one (length - 1); sets those rows' starts."""
        n, end = part.length, self.length
        if n > end:
            raise ConfigError(f"KV cache: {n} positions do not fit before position {end}")
        index = host_values(rows, self.keys.device)
        self.keys[:, index, :, end - n: end] = part.keys[:, :, :, :n]
        self.values[:, index, :, end - n: end] = part.values[:, :, :, :n]
        if self.starts is None:
            self.starts = torch.zeros(self.batch_size, dtype=torch.long, device=self.keys.device)
        self.starts[index] = end - n

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (after every layer wrote them with `update`)."""
        self._check_length(self.length + n)
        self.length += n

    def truncate(self, n: int) -> None:
        """Keep the first `n` filled positions, forget the rest (roll back)."""
        self._check_cut(n)
        self.length = n
        if self.starts is not None:
            self.starts = self.starts.clamp(max=n)

    def keep_last(self, n: int) -> None:
        """Keep the last `n` filled positions, moved to positions 0..n-1 (slide the window)."""
        self._check_cut(n)
        start = self.length - n
        if start > 0 and n > 0:
            # Source and destination overlap when n > start: copy out first.
            self.keys[:, :, :, :n] = self.keys[:, :, :, start : self.length].clone()
            self.values[:, :, :, :n] = self.values[:, :, :, start : self.length].clone()
        self.length = n
        if self.starts is not None:
            self.starts = (self.starts - start).clamp(min=0)

    def reset(self) -> None:
        """Forget everything (the memory stays allocated)."""
        self.length, self.starts = 0, None

    def _check_cut(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ConfigError(f"KV cache can keep 0..{self.length} positions, asked for {n}")

    def _check_length(self, length: int) -> None:
        if not 0 <= length <= self.max_len:
            raise ConfigError(f"KV cache length must be in 0..{self.max_len}, got {length}")
