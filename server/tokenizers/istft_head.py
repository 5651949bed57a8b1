"""Inverse-STFT decoder (as in Vocos): ConvNeXt 1-D blocks at the frame rate → log-magnitude and
phase of one STFT frame per codec frame → `torch.istft`.

It beat SEANet's upsampling decoder at equal CPU time in NOTES-codec.md (+2.6 vs −3.8 dB SI-SDR at
6 kbps, partials that follow the played notes) and decodes ~15× faster: all its work happens at
the frame rate and the last step is one inverse FFT.

Framing: the latents are padded by one frame (replicating the last) so that `torch.istft`
(center=True, n_fft = 4 hops, Hann) returns exactly F × hop samples; STFT frame f is centred on
sample f × hop.
"""

from __future__ import annotations

import torch
from torch import nn

_MAX_LOG_MAGNITUDE = 9.0  # e^9 ≈ 8,100: far above the STFT peak of RMS-normalised audio


class ConvNeXtBlock(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, residual. [B, C, F]."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float, kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # [B, F, C]
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ISTFTDecoder(nn.Module):
    """Latents [B, D, F] → audio [B, 1, F × hop_length]."""

    def __init__(
        self,
        input_dim: int,
        hop_length: int,
        n_fft: int,
        dim: int = 192,
        intermediate_dim: int = 576,
        n_layers: int = 6,
    ):
        super().__init__()
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.embed = nn.Conv1d(input_dim, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, layer_scale=1.0 / n_layers)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, n_fft + 2)  # log-magnitude and phase of n_fft/2 + 1 bins
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrogram(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, F] → complex STFT [B, n_fft/2 + 1, F + 1]."""
        x = nn.functional.pad(latents, (0, 1), mode="replicate")
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.proj(self.final_norm(x.transpose(1, 2))).transpose(1, 2)  # [B, n_fft+2, F+1]
        log_magnitude, phase = x.chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude.clamp(max=_MAX_LOG_MAGNITUDE))
        return torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        n_frames = latents.shape[-1]
        audio = torch.istft(
            self.spectrogram(latents),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            length=n_frames * self.hop_length,
        )
        return audio.unsqueeze(1)
