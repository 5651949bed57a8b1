"""The decoder for the delay layout: one decoder position per column of K codebook tokens.

The whole point of MusicGen's delay pattern is one decoder step per frame (K times fewer steps
than the flat layout's one token per position). So a position here holds a *column*: the summed
embeddings of its R rows (one token per row, from the decoder's one shared table; empty rows hold
the stage's PAD id), and K output projections read the position's final state, one per codebook
level, each over that level's own V codes:

    tokens [B, R, T]  →  Σ_r tok_emb(tokens[:, r])  →  blocks  →  norm  →  logits [B, K, T, V]

R ≥ K: a conditioning column may hold more rows than the stage predicts (the fine stage reads Q'
coarse codes per frame and predicts K − Q' fine ones). Logit k is level k's code (0..V-1), so its
stream id is code + the level's offset. Everything else (blocks, relative bias, KV cache, `step`)
is the plain `Decoder`'s, unchanged: this class only replaces the embedding sum and the heads.
"""

from __future__ import annotations

import torch
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.model.decoder import Decoder, DecoderConfig


class ColumnDecoder(Decoder):
    """Token columns [B, R, T] → per-level logits [B, K, T, V]; KV-cached like `Decoder`."""

    def __init__(self, config: DecoderConfig, n_levels: int, level_vocab_size: int) -> None:
        if n_levels < 1 or level_vocab_size < 1:
            raise ConfigError(
                f"column decoder needs n_levels >= 1 and level_vocab_size >= 1, got "
                f"{n_levels} and {level_vocab_size}"
            )
        super().__init__(config)
        self.lm_head = None  # replaced by one projection per level
        self.heads = nn.Parameter(torch.empty(n_levels, level_vocab_size, config.d_model))
        nn.init.normal_(self.heads, mean=0.0, std=0.02)

    @property
    def n_levels(self) -> int:
        return self.heads.shape[0]

    def num_params(self, non_embedding: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel() + self.heads.numel()
        return total

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, R, T] → the summed embeddings of each column [B, T, C]."""
        if tokens.ndim != 3:
            raise ValueError(f"column tokens must be [B, R, T], got {tuple(tokens.shape)}")
        return self.tok_emb(tokens).sum(dim=1)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Final states [B, T, C] → per-level logits [B, K, T, V]."""
        return torch.einsum("btc,kvc->bktv", x, self.heads)
