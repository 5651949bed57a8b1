"""Codec training losses: L1 waveform, multi-scale mel/STFT, and an optional multi-scale STFT
discriminator (hinge loss + feature matching), all on `torch.stft` (no torchaudio).

Shapes: audio [B, 1, T]. Mel filterbanks come from librosa.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LOG_EPS = 1e-5


@dataclass(frozen=True)
class CodecLossWeights:
    """Weights of the generator's loss terms (EnCodec's λ_t = 0.1, λ_f = 1, λ_g = λ_feat = 3)."""

    wave: float = 0.1
    spectral: float = 1.0
    commit: float = 1.0
    adversarial: float = 3.0
    feature: float = 3.0


def _stft_magnitude(audio: torch.Tensor, n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """audio [B, 1, T] → |STFT| [B, n_fft/2 + 1, frames] (Hann, hop n_fft/4)."""
    spec = torch.stft(audio.reshape(-1, audio.shape[-1]), n_fft, hop_length=n_fft // 4,
                      window=window, center=True, return_complex=True)
    return spec.abs()


class MultiScaleSpectralLoss(nn.Module):
    """Mean over STFT sizes of log-mel L1 (magnitude mel, min(80, n_fft/4) bands, the codec
    metric's definition) plus spectral convergence ‖|X| − |Y|‖_F / ‖|X|‖_F of the linear STFT."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)):
        super().__init__()
        self.n_ffts = n_ffts
        for n_fft in n_ffts:
            mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=min(80, n_fft // 4))
            self.register_buffer(f"mel_{n_fft}", torch.from_numpy(mel).float(), persistent=False)
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = output.new_zeros(())
        for n_fft in self.n_ffts:
            window, mel = getattr(self, f"window_{n_fft}"), getattr(self, f"mel_{n_fft}")
            mag_out = _stft_magnitude(output, n_fft, window)
            mag_ref = _stft_magnitude(target, n_fft, window)
            log_mel = (torch.log(mel @ mag_out + LOG_EPS) - torch.log(mel @ mag_ref + LOG_EPS))
            convergence = torch.linalg.norm(mag_ref - mag_out) / (torch.linalg.norm(mag_ref) + 1e-7)
            total = total + log_mel.abs().mean() + convergence
        return total / len(self.n_ffts)


class STFTDiscriminator(nn.Module):
    """2-D conv stack over one STFT resolution (real and imaginary parts as two channels)."""

    def __init__(self, n_fft: int, channels: int = 32):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        specs = [  # (in, out, kernel (time, freq), stride, dilation)
            (2, channels, (3, 9), (1, 1), (1, 1)),
            (channels, channels, (3, 9), (1, 2), (1, 1)),
            (channels, channels, (3, 9), (1, 2), (2, 1)),
            (channels, channels, (3, 9), (1, 2), (4, 1)),
            (channels, channels, (3, 3), (1, 1), (1, 1)),
        ]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(i, o, k, s, dilation=d,
                                  padding=(d[0] * (k[0] - 1) // 2, (k[1] - 1) // 2)))
            for i, o, k, s, d in specs
        )
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """audio [B, 1, T] → (logits [B, 1, frames, bins'], feature maps)."""
        spec = torch.stft(audio.reshape(-1, audio.shape[-1]), self.n_fft,
                          hop_length=self.n_fft // 4, window=self.window, center=True,
                          return_complex=True)
        x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, frames, bins]
        features = []
        for conv in self.convs:
            x = self.act(conv(x))
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFT discriminator shape, on torch.stft."""

    def __init__(self, n_ffts: tuple[int, ...] = (2048, 1024, 512), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(audio) for d in self.discriminators]


def discriminator_loss(real: list[tuple[torch.Tensor, list[torch.Tensor]]],
                       fake: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> torch.Tensor:
    """Hinge loss of the discriminator (fake from a detached generator output)."""
    losses = [torch.relu(1 - r).mean() + torch.relu(1 + f).mean()
              for (r, _), (f, _) in zip(real, fake, strict=True)]
    return torch.stack(losses).mean()


def generator_adversarial_losses(
    real: list[tuple[torch.Tensor, list[torch.Tensor]]],
    fake: list[tuple[torch.Tensor, list[torch.Tensor]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge adversarial loss, relative feature-matching L1) for the generator."""
    adversarial = torch.stack([torch.relu(1 - f).mean() for f, _ in fake]).mean()
    matching = []
    for (_, real_feats), (_, fake_feats) in zip(real, fake, strict=True):
        for r, f in zip(real_feats, fake_feats, strict=True):
            r = r.detach()
            matching.append((f - r).abs().mean() / (r.abs().mean() + 1e-7))
    return adversarial, torch.stack(matching).mean()
