"""Small things for the LM training tests: two toy stages and synthetic token caches.

The stages follow the `Stage` protocol the real stages implement (server/model/stages.py):
`SemanticToyStage` predicts the next semantic token; `CoarseToyStage` is conditioned like the
paper's coarse stage (semantic tokens, then the first codebook; no loss on the conditioning).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.stage_api import IGNORE_INDEX, TokenWindow, TrainingExample
from continuo.server.training.token_cache import TokenSplit, write_token_cache

SEMANTIC_VOCAB = 16
CODEBOOK_SIZE = 16
SEMANTIC_HZ, CODEC_HZ = 25.0, 75.0


class SemanticToyStage:
    name = "semantic_toy"
    vocab_size = SEMANTIC_VOCAB

    def __init__(self, **overrides: object) -> None:
        self._config = DecoderConfig.tiny(vocab_size=self.vocab_size, **overrides)

    @property
    def decoder_config(self) -> DecoderConfig:
        return self._config

    def build_model(self) -> Decoder:
        return Decoder(self._config)

    def example(self, window: TokenWindow) -> TrainingExample:
        return TrainingExample(window.semantic[:-1], window.semantic[1:])


class CoarseToyStage(SemanticToyStage):
    name = "coarse_toy"
    vocab_size = SEMANTIC_VOCAB + CODEBOOK_SIZE

    def example(self, window: TokenWindow) -> TrainingExample:
        seq = torch.cat([window.semantic, window.acoustic[0] + SEMANTIC_VOCAB])
        targets = seq[1:].clone()
        targets[: len(window.semantic) - 1] = IGNORE_INDEX  # conditioning: no loss
        return TrainingExample(seq[:-1], targets)


def patterned_items(n_items: int, seconds: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Learnable token items: semantic tokens count up modulo 8 from a random phase; the 2
    codebooks repeat each semantic token 3 times (75 Hz), codebook 1 shifted by 1."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        n = round(seconds * SEMANTIC_HZ * rng.uniform(0.8, 1.2))
        semantic = (rng.integers(8) + np.arange(n)) % 8
        codes = np.repeat(semantic, 3)
        items.append((semantic, np.stack([codes, (codes + 1) % CODEBOOK_SIZE])))
    return items


def synthetic_cache(folder: Path, n_items: int = 6, seconds: float = 6.0, seed: int = 0) -> Path:
    """A token cache folder with patterned train and valid splits (no audio, no codec)."""
    splits = {}
    for name, n, s in (("train", n_items, seed), ("valid", 2, seed + 100)):
        items = patterned_items(n, seconds, s)
        splits[name] = TokenSplit.from_items([i[0] for i in items], [i[1] for i in items], 3,
                                             SEMANTIC_HZ)
    meta = {"tokenizers": {"codec": {"frame_rate": CODEC_HZ, "n_codebooks": 2},
                           "semantic": {"frame_rate": SEMANTIC_HZ}}}
    return write_token_cache(folder, splits, meta)
