"""The decoder-only transformer behind all three AudioLM stages (semantic, coarse, fine).

Read top to bottom: norm → relative position bias → attention → MLP → block → config → model.

- Pre-norm blocks (LayerNorm or RMSNorm), a GELU MLP, causal self-attention through torch's
  `F.scaled_dot_product_attention`.
- Positions are relative, as in the AudioLM paper: T5's learned per-head bias over log-spaced
  buckets of the distance from a query back to a key, one table shared by all layers, added to
  the attention logits as the attention mask. Nothing positional is stored in the keys, so a KV
  cache can be rolled back or slid along without recomputation (see kv_cache.py).
- Incremental decoding with an explicit `KVCache`: `model.step(tokens, cache)` prefills a prompt
  (in one go or in chunks) and then takes one token at a time. A step computes only the new
  queries' rows of the bias, against the cached keys: O(T_past) work, never the full
  T × T matrix (rebuilding that every step is what made audiolm-pytorch ~30× slower here).
- Attention logits are scaled by 1/sqrt(hs) (SDPA's default; T5 folds that into its init).
- Optional grouped key/value heads (`n_kv_heads` < `n_heads`, GQA; not in the paper): the KV
  cache shrinks by n_heads / n_kv_heads, and reading it is what makes a step at position 1,500
  dearer than one at 100 on a CPU (at d 256 and 1,500 positions it is as many bytes as the
  weights).

Shapes: B batch rows, T new positions, S = positions attended (cached + new), C = d_model,
nh heads, nkv key/value heads (= nh unless grouped), hs = C // nh head size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.model.kv_cache import KVCache

NORMS = ("layer", "rms")


def make_norm(kind: str, d_model: int, bias: bool) -> nn.Module:
    """Pre-norm layer: LayerNorm (with or without bias) or RMSNorm."""
    if kind == "rms":
        return nn.RMSNorm(d_model)
    return nn.LayerNorm(d_model, bias=bias)


def relative_position_bucket(
    distance: torch.Tensor, n_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's causal bucketing of how far back a key is (distance = query pos − key pos ≥ 0).

    Distances 0 .. n_buckets/2 − 1 get a bucket each; larger ones share log-spaced buckets up to
    `max_distance`; anything farther falls in the last bucket. E.g. 32 buckets, max 128:
    distance 0..15 → 0..15, 16..18 → 16, 19..20 → 17, 32 → 21, 64 → 26, ≥ 113 → 31.
    """
    exact = n_buckets // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (n_buckets - exact)).long()
    large = large.clamp(max=n_buckets - 1)
    return torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """A learned bias per head and distance bucket, turned into the causal attention mask."""

    def __init__(self, n_heads: int, n_buckets: int, max_distance: int, max_seq_len: int) -> None:
        super().__init__()
        self.table = nn.Embedding(n_buckets, n_heads)
        # Bucket of every distance 0 .. max_seq_len − 1: a constant, so not saved with the weights.
        distance = torch.arange(max_seq_len)
        buckets = relative_position_bucket(distance, n_buckets, max_distance)
        self.register_buffer("buckets", buckets, persistent=False)

    def forward(self, start: int, n_new: int) -> torch.Tensor:
        """Bias (1, nh, T, S) for queries at positions start .. start+T−1 against keys 0 .. S−1.

        S = start + T. Keys after their query get −inf (causal). Only these T rows are built, so
        one decoding step costs O(S), not O(S²).
        """
        device = self.buckets.device
        query = torch.arange(start, start + n_new, device=device)
        key = torch.arange(start + n_new, device=device)
        distance = query[:, None] - key[None, :]  # (T, S)
        bias = self.table(self.buckets[distance.clamp(min=0)])  # (T, S, nh)
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # (1, nh, T, S)
        return bias.masked_fill(distance < 0, float("-inf"))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the new positions and, with a cache, everything before."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = config.n_heads, config.kv_heads
        self.head_size = config.head_size
        kv_dim = self.n_kv_heads * self.head_size
        self.split = (config.d_model, kv_dim, kv_dim)
        self.qkv = nn.Linear(config.d_model, sum(self.split), bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        """x (B, T, C), bias (1, nh, T, S) → (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=2)
        q = q.view(B, T, self.n_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hs): cached positions + the new ones
        # enable_gqa exists from torch 2.5 on: passed only when the heads are grouped.
        grouped = {"enable_gqa": True} if self.n_kv_heads != self.n_heads else {}
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0, **grouped,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C → d_ff → GELU → C."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.norm_attn = make_norm(config.norm, config.d_model, config.bias)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = make_norm(config.norm, config.d_model, config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), bias, cache, layer)
        return x + self.mlp(self.norm_mlp(x))


@dataclass(frozen=True)
class DecoderConfig:
    """Size and options of a decoder; checked at construction. Presets: paper, small, tiny."""

    vocab_size: int
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: one key/value head per head (the paper)
    d_model: int = 256
    d_ff: int = 1024
    max_seq_len: int = 4096  # longest sequence (prompt + continuation) one cache can hold
    dropout: float = 0.0
    rel_buckets: int = 32  # T5 relative-position buckets (T5's default)
    rel_max_distance: int = 128  # farther keys share the last bucket (T5's default; a stage
    # whose tokens are denser in time, e.g. the flat layout's K per frame, may want more)
    bias: bool = True  # biases in Linear layers and LayerNorm
    norm: str = "layer"  # "layer" (LayerNorm) or "rms" (RMSNorm)
    tie_embeddings: bool = True  # output head shares the token embedding matrix

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decoder {name} must be >= 1, got {getattr(self, name)}")
        if self.n_kv_heads is not None and not (
            1 <= self.n_kv_heads <= self.n_heads and self.n_heads % self.n_kv_heads == 0
        ):
            raise ConfigError(
                f"decoder n_kv_heads must divide n_heads {self.n_heads}, got {self.n_kv_heads}"
            )
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"decoder d_model {self.d_model} must be a multiple of n_heads {self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"decoder dropout must be in [0, 1), got {self.dropout}")
        if self.rel_buckets < 2:
            raise ConfigError(f"decoder rel_buckets must be >= 2, got {self.rel_buckets}")
        if self.rel_max_distance < self.rel_buckets:
            raise ConfigError(
                f"decoder rel_max_distance {self.rel_max_distance} must be >= rel_buckets "
                f"{self.rel_buckets}"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"decoder norm must be one of {NORMS}, got {self.norm!r}")

    @classmethod
    def paper(cls, vocab_size: int = 1024, **overrides: Any) -> DecoderConfig:
        """AudioLM's size: 12 layers, 16 heads, d_model 1024, feed-forward 4096 (~151M params
        without the embedding)."""
        base = {"n_layers": 12, "n_heads": 16, "d_model": 1024, "d_ff": 4096}
        return cls(vocab_size=vocab_size, **{**base, **overrides})

    @classmethod
    def small(cls, vocab_size: int = 1024, **overrides: Any) -> DecoderConfig:
        """Realtime on 2 CPU cores: 4 layers, 4 heads, d_model 256 (~3.2M params)."""
        base = {"n_layers": 4, "n_heads": 4, "d_model": 256, "d_ff": 1024}
        return cls(vocab_size=vocab_size, **{**base, **overrides})

    @classmethod
    def tiny(cls, vocab_size: int = 64, **overrides: Any) -> DecoderConfig:
        """For tests: 2 layers, 2 heads, d_model 32, 256 positions."""
        base = {"n_layers": 2, "n_heads": 2, "d_model": 32, "d_ff": 64, "max_seq_len": 256,
                "rel_buckets": 8, "rel_max_distance": 32}
        return cls(vocab_size=vocab_size, **{**base, **overrides})

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_heads, or fewer shared by groups of query heads (GQA)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown decoder config keys: {unknown}")
        return cls(**data)


class Decoder(nn.Module):
    """Token ids (B, T) → next-token logits (B, T, V); KV-cached incremental decoding."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.rel_bias = RelativePositionBias(
            config.n_heads, config.rel_buckets, config.rel_max_distance, config.max_seq_len
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = make_norm(config.norm, config.d_model, config.bias)
        # Tied: the output head reuses the embedding matrix, so the state dict holds it once
        # (safetensors refuses two names for one tensor).
        self.lm_head = (
            None if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self.apply(self._init_weights)
        # GPT-2: the projections that write into the residual stream start smaller.
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 / nanoGPT init: N(0, 0.02) weights and embeddings, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the token embedding and output head."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if self.lm_head is not None:
                total -= self.lm_head.weight.numel()
        return total

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for `batch_size` sequences of up to `max_len` (default max_seq_len)
        positions, on the model's device and dtype unless told otherwise."""
        max_len = self.config.max_seq_len if max_len is None else max_len
        if not 1 <= max_len <= self.config.max_seq_len:
            raise ConfigError(
                f"cache max_len must be in 1..{self.config.max_seq_len} (the decoder's "
                f"max_seq_len), got {max_len}"
            )
        weight = self.tok_emb.weight
        c = self.config
        return KVCache.empty(
            c.n_layers, batch_size, c.kv_heads, max_len, c.head_size,
            device=weight.device if device is None else device,
            dtype=weight.dtype if dtype is None else dtype,
        )

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T) → logits (B, T, V).

        Without a cache: the whole sequence (training). With one: the tokens continue what the
        cache holds, which is updated in place (see `step`); a ragged cache (`starts`) masks each
        row's keys before its start.
        """
        x = self._embed(tokens)  # (B, T, C)
        B, T, _ = x.shape
        start = 0 if cache is None else self._check_cache(cache, B)
        if start + T > self.config.max_seq_len:
            raise ConfigError(
                f"sequence of {start + T} positions exceeds max_seq_len {self.config.max_seq_len}"
            )
        bias = self.rel_bias(start, T)  # (1, nh, T, S), shared by all layers
        mask = None if cache is None else cache.key_mask(start + T)  # (B, 1, 1, S)
        if mask is not None:
            bias = bias.masked_fill(mask, float("-inf"))  # (B, nh, T, S)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, bias, cache, layer)
        if cache is not None:
            cache.advance(T)
        return self._head(self.norm_f(x))

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) → embeddings (B, T, C)."""
        return self.tok_emb(tokens)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Final states (B, T, C) → logits (B, T, V)."""
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)

    def step(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Feed new tokens (B, T_new) after the cache's positions: a prompt prefill (whole or
        in chunks) or one sampled token (T_new = 1). Returns logits (B, T_new, V) and the cache,
        updated in place (its length grows by T_new)."""
        return self(tokens, cache), cache

    def _check_cache(self, cache: KVCache, batch_size: int) -> int:
        c = self.config
        expected = (c.n_layers, batch_size, c.kv_heads, c.head_size)
        got = (cache.n_layers, cache.batch_size, cache.n_heads, cache.head_size)
        if got != expected:
            raise ConfigError(
                f"KV cache (layers, batch, heads, head size) {got} does not fit this decoder "
                f"and batch: expected {expected}"
            )
        return cache.length
