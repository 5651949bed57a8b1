"""Untrained EnCodec models that still code audio, and the seam measure of streaming decode.

encodec builds its quantiser with all-zero codebooks (k-means fills them on the first training
batch), so a model with random weights codes every frame as 0. `seeded_encodec_model` draws its
codebooks from the model's own latents instead, so codes follow the audio.
"""

from __future__ import annotations

import numpy as np
import torch
from audio_fixtures import tone

from continuo.server.tokenizers._encodec import EncodecModel
from continuo.server.tokenizers.codec import EncodedAudio, build_encodec_model
from continuo.server.tokenizers.streaming import StreamingDecoder


def two_tones(sample_rate: int, channels: int, seconds: float) -> torch.Tensor:
    """[1, C, T] two tones per channel (a different lower one on each channel)."""
    chans = [
        tone(220.0 * (c + 1), seconds, sample_rate) + tone(330.0, seconds, sample_rate)
        for c in range(channels)
    ]
    return torch.from_numpy(np.stack(chans))[None]


def seeded_encodec_model(name: str, seed: int = 1234) -> EncodecModel:
    """encodec's architecture with random weights and codebooks drawn from its own latents."""
    torch.manual_seed(seed)
    model = build_encodec_model(name)
    audio = 0.1 * torch.randn(1, model.channels, model.sample_rate)
    fill_codebooks(model, audio + two_tones(model.sample_rate, model.channels, 1.0))
    return model


def fill_codebooks(model: EncodecModel, audio: torch.Tensor) -> None:
    """Codebooks sampled (plus a little noise) from the residuals of `audio`'s latents,
    level by level. audio: [B, C, T]."""
    with torch.inference_mode():
        x = audio / audio.pow(2).mean().sqrt() if model.normalize else audio
        latents = model.encoder(x)  # [B, D, F]
    residual = latents.transpose(1, 2).reshape(-1, latents.shape[1]).clone()  # [B * F, D]
    for layer in model.quantizer.vq.layers:
        codebook = layer._codebook
        picks = residual[torch.randint(len(residual), (codebook.codebook_size,))]
        codebook.embed.copy_(picks + 0.1 * residual.std() * torch.randn_like(picks))
        residual = residual - codebook.embed[codebook.quantize(residual)]


def stream_decode(
    decoder: StreamingDecoder, encoded: EncodedAudio, chunk_sizes: list[int]
) -> tuple[torch.Tensor, list[int]]:
    """Decode `encoded` in chunks of the given frame counts (the last one repeats).

    Returns the audio [B, C, F * hop] and the frame numbers of the seams between chunks.
    """
    state, pieces, ends = decoder.start(), [], []
    start, i, n_frames = 0, 0, encoded.codes.shape[-1]
    while start < n_frames:
        size = chunk_sizes[min(i, len(chunk_sizes) - 1)]
        chunk = EncodedAudio(encoded.codes[..., start : start + size], encoded.scale)
        audio, state = decoder.step(state, chunk)
        pieces.append(audio)
        start, i = start + size, i + 1
        ends.append(start)
    audio, state = decoder.finish(state)
    return torch.cat([*pieces, audio], dim=-1), ends[:-1]


def seam_error(
    streamed: torch.Tensor, seams: list[int], whole: torch.Tensor, hop: int
) -> tuple[float, float]:
    """How far a streamed decode is from the whole one.

    Returns (max |error| / max |whole| over the whole stream,
             RMS error / RMS of whole within 2 frames either side of each seam).
    """
    error = streamed - whole
    near = [slice(max(0, s * hop - 2 * hop), s * hop + 2 * hop) for s in seams]
    near_error = torch.cat([error[..., sl] for sl in near], dim=-1)
    near_whole = torch.cat([whole[..., sl] for sl in near], dim=-1)
    max_rel = (error.abs().max() / whole.abs().max()).item()
    rms_rel = (near_error.pow(2).mean().sqrt() / near_whole.pow(2).mean().sqrt()).item()
    return max_rel, rms_rel
