"""Residual vector quantiser: encodec's EMA codebooks with the fixes a small training run needs.

Built on encodec 0.1.1's `EuclideanCodebook` and `VectorQuantization` (EMA updates, straight-through
estimator, commitment loss), with three changes measured in NOTES-codec.md:

1. k-means initialisation is explicit (`ResidualQuantizer.initialize(latents)`, residual level by
   level, called by the trainer after a warm-up with the quantiser bypassed) and uses matmul
   distances ‖a‖² − 2ab + ‖b‖² instead of encodec's N×K×D difference tensor (seconds, not minutes).
2. Dead codes are replaced AFTER the EMA update, in `embed`, `embed_avg` and `cluster_size`
   together; encodec writes only `embed`, which its EMA normalisation overwrites right after.
3. A code is dead when its EMA usage falls under a fraction of the average code's usage, so the
   rule does not depend on the batch size (encodec's absolute threshold of 2 uses per batch marks
   every code dead when a batch holds fewer vectors than the codebook has codes).

Before `initialize` the codebooks hold encodec's random uniform init, so an untrained codec still
produces varied codes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from continuo.server.errors import ConfigError
from continuo.server.tokenizers._encodec import encodec

_core_vq = encodec.quantization.core_vq
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizerConfig:
    """Shape and training behaviour of the residual quantiser."""

    dimension: int = 128
    n_codebooks: int = 8
    codebook_size: int = 1024
    decay: float = 0.99  # EMA decay of the codebooks
    kmeans_iters: int = 20
    dead_code_fraction: float = 0.02  # dead: EMA usage < this × the average code's usage
    commitment_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dimension", "n_codebooks", "codebook_size", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quantizer {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"quantizer decay must be in (0, 1), got {self.decay}")
        if not 0.0 <= self.dead_code_fraction < 1.0:
            raise ConfigError(
                f"quantizer dead_code_fraction must be in [0, 1), got {self.dead_code_fraction}"
            )


@dataclass(frozen=True)
class QuantizerOutput:
    """quantized [B, D, F] (straight-through in training), codes [B, K, F], commit_loss scalar."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


def kmeans(
    samples: torch.Tensor, n_clusters: int, n_iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with matmul distances. samples [N, D] → (means [K, D], counts [K]).

    Clusters that end an iteration empty are re-seeded with random samples.
    """
    samples = samples.detach().float()
    means = _core_vq.sample_vectors(samples, n_clusters).clone()
    sq_norms = samples.pow(2).sum(1, keepdim=True)  # [N, 1]
    for iteration in range(n_iters + 1):  # the last pass only counts the final assignment
        dists = sq_norms - 2 * samples @ means.t() + means.pow(2).sum(1)[None]  # [N, K]
        assign = dists.argmin(dim=1)
        counts = torch.bincount(assign, minlength=n_clusters)
        if iteration == n_iters:
            break
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        empty = counts == 0
        means = torch.where(empty[:, None], means, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            means[empty] = _core_vq.sample_vectors(samples, int(empty.sum()))
    return means, counts


class Codebook(_core_vq.EuclideanCodebook):
    """encodec's EMA codebook; init explicit, dead codes replaced after the EMA update.

    Buffers (as encodec's): embed [K, D], embed_avg [K, D], cluster_size [K] (EMA usage per
    batch), inited [1] (1 once `initialize` has run on data).
    """

    def __init__(self, dim: int, codebook_size: int, decay: float, dead_code_fraction: float):
        super().__init__(dim, codebook_size, kmeans_init=False, decay=decay,
                         threshold_ema_dead_code=0)
        self.dead_code_fraction = dead_code_fraction
        self.inited.fill_(0.0)
        self.cluster_size.fill_(1.0)  # consistent with embed_avg == embed

    def init_embed_(self, data: torch.Tensor) -> None:
        """encodec's lazy init on the first batch is replaced by `initialize`."""

    @torch.no_grad()
    def initialize(self, samples: torch.Tensor, n_iters: int) -> None:
        """k-means on samples [N, D]; usage normalised to mean 1 (empty clusters start dead)."""
        means, counts = kmeans(samples, self.codebook_size, n_iters)
        usage = counts.float() / counts.float().mean()
        self.embed.copy_(means)
        self.cluster_size.copy_(usage)
        self.embed_avg.copy_(means * usage[:, None])
        self.inited.fill_(1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., D] → (quantized [..., D], codes [...]); EMA update and expiry in training."""
        flat = self.preprocess(x)
        codes = self.quantize(flat)
        quantized = self.dequantize(codes)
        if self.training:
            self._ema_update(flat.detach(), codes)
            self._replace_dead_codes(flat.detach())
        return quantized.view(x.shape), codes.view(x.shape[:-1])

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = nn.functional.one_hot(codes, self.codebook_size).type(flat.dtype)  # [N, K]
        _core_vq.ema_inplace(self.cluster_size, onehot.sum(0), self.decay)
        _core_vq.ema_inplace(self.embed_avg, (flat.t() @ onehot).t(), self.decay)
        smoothed = _core_vq.laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon)
        self.embed.copy_(self.embed_avg / (smoothed * self.cluster_size.sum())[:, None])

    @torch.no_grad()
    def _replace_dead_codes(self, flat: torch.Tensor) -> None:
        if self.dead_code_fraction <= 0:
            return
        mean_usage = self.cluster_size.mean()
        dead = self.cluster_size < self.dead_code_fraction * mean_usage
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        samples = _core_vq.sample_vectors(flat, n_dead)
        self.embed[dead] = samples
        self.cluster_size[dead] = mean_usage
        self.embed_avg[dead] = samples * mean_usage


class VectorQuantizer(_core_vq.VectorQuantization):
    """encodec's VectorQuantization (straight-through, commitment loss) over our `Codebook`."""

    def __init__(self, config: QuantizerConfig):
        super().__init__(dim=config.dimension, codebook_size=config.codebook_size,
                         decay=config.decay, kmeans_init=False, threshold_ema_dead_code=0,
                         commitment_weight=config.commitment_weight)
        self._codebook = Codebook(config.dimension, config.codebook_size, config.decay,
                                  config.dead_code_fraction)

    @property
    def codebook_module(self) -> Codebook:
        return self._codebook


class ResidualQuantizer(nn.Module):
    """Residual VQ over `n_codebooks` levels; any prefix of the levels can be used (n_q)."""

    def __init__(self, config: QuantizerConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(VectorQuantizer(config) for _ in range(config.n_codebooks))

    @property
    def initialized(self) -> bool:
        """True once `initialize` has set the codebooks from data."""
        return all(bool(layer.codebook_module.inited.item()) for layer in self.layers)

    def _check_n_q(self, n_q: int) -> None:
        if not 1 <= n_q <= len(self.layers):
            raise ConfigError(f"n_q must be in 1..{len(self.layers)}, got {n_q}")

    def forward(self, x: torch.Tensor, n_q: int) -> QuantizerOutput:
        """x [B, D, F] → quantized [B, D, F] through the first n_q levels, codes [B, n_q, F]."""
        self._check_n_q(n_q)
        residual, quantized_out = x, torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.layers[:n_q]:
            quantized, indices, loss = layer(residual)
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(indices)
            losses.append(loss)
        return QuantizerOutput(quantized_out, torch.stack(codes, 1), torch.cat(losses).mean())

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """x [B, D, F] → codes [B, n_q, F] int64."""
        self._check_n_q(n_q)
        residual, codes = x, []
        for layer in self.layers[:n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] (K <= n_codebooks) → quantized latents [B, D, F]."""
        self._check_n_q(codes.shape[1])
        out = self.layers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out

    @torch.no_grad()
    def initialize(self, latents: torch.Tensor) -> None:
        """k-means each level on the residual the levels before it leave. latents [N, D]."""
        residual = latents.detach().float()
        for layer in self.layers:
            layer.codebook_module.initialize(residual, self.config.kmeans_iters)
            codes = layer.codebook_module.quantize(residual)
            residual = residual - layer.codebook_module.dequantize(codes)
        log.info("quantizer initialised by k-means on %d vectors", latents.shape[0])
