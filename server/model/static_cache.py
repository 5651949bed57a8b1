"""The static step's memory: one preallocated KV cache per model, shared by its row buckets.

A static step (static_step.py) has every shape fixed, so its buffers are made once and never
move (a recorded CUDA graph reads and writes them where they are):

    keys, values  [L, R, nkv, max_len, hs]   one per model: max_len is the model's one length
                                             bucket, R the most rows reserved so far
    bucket of B rows                          keys[:, :B], values[:, :B] (views: same memory),
                                             starts [B] int64, position 0-dim int64
    token buffer [B, 1] or [B, R, 1]          int64, one per shape

Rows are bucketed (`bucket_rows`: 1, 2, 4, 8, 16, then multiples of 16): a decode of 3 rows
uses the 4-row bucket, its 4th row a dummy whose outputs are dropped. Every row bucket reads
the first rows of the same cache, so buckets cost no memory of their own; one decode at a time
holds the cache (`lent_to`). Growing the cache to more rows allocates a new one (the old
buckets and everything recorded on them are dropped by the owner).
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from continuo.server.errors import ConfigError

ROW_BUCKETS = (1, 2, 4, 8, 16)  # batch rows rounded up to one of these, then to multiples of 16
LEN_MULTIPLE = 256  # the length bucket rounded up to a multiple of this (capped at max_seq_len)


def bucket_rows(n_rows: int) -> int:
    """Rows of the static batch for n_rows real ones: 3 → 4, 9 → 16, 17 → 32."""
    if n_rows < 1:
        raise ConfigError(f"a static step needs at least one row, got {n_rows}")
    for size in ROW_BUCKETS:
        if n_rows <= size:
            return size
    last = ROW_BUCKETS[-1]
    return -(-n_rows // last) * last


def row_buckets(max_rows: int) -> list[int]:
    """Every row bucket a decode of up to max_rows rows lands in: 16 → [1, 2, 4, 8, 16],
    40 → [1, 2, 4, 8, 16, 32, 48]."""
    top, last = bucket_rows(max_rows), ROW_BUCKETS[-1]
    return [r for r in ROW_BUCKETS if r <= top] + list(range(2 * last, top + 1, last))


def bucket_len(max_len: int, limit: int) -> int:
    """Cache positions for max_len needed: up to a multiple of LEN_MULTIPLE, at most limit."""
    if not 1 <= max_len <= limit:
        raise ConfigError(f"cache max_len must be in 1..{limit} (max_seq_len), got {max_len}")
    return min(-(-max_len // LEN_MULTIPLE) * LEN_MULTIPLE, limit)


@contextlib.contextmanager
def plain_tensors() -> Iterator[None]:
    """No autograd, and ordinary (not inference) tensors even inside torch.inference_mode: the
    static buffers are written in place by decodes in either mode."""
    with torch.inference_mode(False), torch.no_grad():
        yield


@dataclass
class Bucket:
    """One row bucket's static inputs: its rows of the cache, each row's first position and the
    position the next step writes."""

    rows: int
    keys: torch.Tensor  # [L, rows, nkv, max_len, hs], a view of the model's cache
    values: torch.Tensor
    starts: torch.Tensor  # [rows] int64
    position: torch.Tensor  # 0-dim int64


@dataclass
class Saved:
    """What a step at position `at` changes in a bucket (the position, the cache entries it
    writes there), as it was before: `restore` puts it back."""

    bucket: Bucket
    at: int
    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, bucket: Bucket, at: int) -> Saved:
        keys, values = bucket.keys[:, :, :, at], bucket.values[:, :, :, at]
        return cls(bucket, at, keys.clone(), values.clone())

    def restore(self) -> None:
        self.bucket.keys[:, :, :, self.at] = self.keys
        self.bucket.values[:, :, :, self.at] = self.values
        self.bucket.position.fill_(self.at)


class StaticCache:
    """The static buffers of one model (see the module doc): max_len positions (a multiple of
    LEN_MULTIPLE or max_seq_len). static_addresses: mark every buffer for torch.compile's CUDA
    graphs (`torch._dynamo.mark_static_address`)."""

    def __init__(self, model: nn.Module, max_len: int, static_addresses: bool = False) -> None:
        self.model, self.static_addresses = model, static_addresses
        self.max_len = bucket_len(max_len, model.config.max_seq_len)
        self.lent_to: weakref.ref | None = None  # the decode holding the cache, while alive
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._buckets: dict[int, Bucket] = {}
        self._tokens: dict[tuple[int, ...], torch.Tensor] = {}

    @property
    def rows(self) -> int:
        """Rows allocated (0 before the first allocation)."""
        return 0 if self._keys is None else self._keys.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values allocated now."""
        return 0 if self._keys is None else 2 * self._keys.nbytes

    @property
    def busy(self) -> bool:
        return self.lent_to is not None and self.lent_to() is not None

    def empty_copy(self, model: nn.Module) -> StaticCache:
        """A cache of the same length for `model` (a copy of this one's, maybe still being
        built: not read here), nothing allocated."""
        twin = copy.copy(self)
        twin.model, twin.lent_to, twin._keys, twin._values = model, None, None, None
        twin._buckets, twin._tokens = {}, {}
        return twin

    def allocate(self, rows: int) -> None:
        """A new cache of `rows` rows; every bucket and token buffer made before is dropped."""
        self.release()
        with plain_tensors():
            cache = self.model.new_cache(rows, self.max_len)
        self._keys, self._values = cache.keys, cache.values
        self._static(cache.keys, cache.values)

    def release(self) -> None:
        self._keys = self._values = None
        self._buckets.clear()
        self._tokens.clear()

    def bucket(self, rows: int) -> Bucket:
        """The bucket of `rows` rows (a row bucket, at most `self.rows`)."""
        bucket = self._buckets.get(rows)
        if bucket is None:
            if self._keys is None or self._values is None or rows > self.rows:
                raise ConfigError(f"static cache of {self.rows} rows has no bucket of {rows}")
            device = self._keys.device
            with plain_tensors():
                bucket = Bucket(rows, self._keys[:, :rows], self._values[:, :rows],
                                starts=torch.zeros(rows, dtype=torch.long, device=device),
                                position=torch.zeros((), dtype=torch.long, device=device))
            self._static(bucket.keys, bucket.values, bucket.starts, bucket.position)
            self._buckets[rows] = bucket
        return bucket

    def token_buffer(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A static int64 input [B, 1] or [B, R, 1], shared by the buckets of B rows; padding
        rows hold 0 or an id an earlier decode left (any id: their outputs are dropped)."""
        buffer = self._tokens.get(shape)
        if buffer is None:
            with plain_tensors():
                buffer = torch.zeros(shape, dtype=torch.long, device=device)
            self._static(buffer)
            self._tokens[shape] = buffer
        return buffer

    def _static(self, *tensors: torch.Tensor) -> None:
        if self.static_addresses:
            for tensor in tensors:
                torch._dynamo.mark_static_address(tensor)
