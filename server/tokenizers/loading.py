"""One way to name a codec everywhere (CLI, presets, model folders).

A codec spec is `encodec_24khz` / `encodec_48khz` (pretrained EnCodec from a weights folder or
the torch hub cache) or the path of a small-codec folder (model.safetensors + config.json).
"""

from __future__ import annotations

from pathlib import Path

import torch

from continuo.server.errors import CheckpointError
from continuo.server.tokenizers.codec import ENCODEC_CHECKPOINTS, AcousticCodec, EncodecCodec
from continuo.server.tokenizers.small_codec import SmallCodec


def load_codec(
    spec: str | Path,
    *,
    bandwidth_kbps: float = 6.0,
    weights_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> AcousticCodec:
    """The codec named by `spec`, set to `bandwidth_kbps`. Raises CheckpointError/ConfigError."""
    if str(spec) in ENCODEC_CHECKPOINTS:
        return EncodecCodec.load(
            str(spec), bandwidth_kbps=bandwidth_kbps, weights_dir=weights_dir, device=device
        )
    folder = Path(spec)
    if not folder.is_dir():
        raise CheckpointError(
            f"codec {str(spec)!r} is neither {' nor '.join(ENCODEC_CHECKPOINTS)} "
            "nor a small-codec folder (model.safetensors + config.json)"
        )
    codec = SmallCodec.load(folder, device=device)
    codec.bandwidth_kbps = bandwidth_kbps
    return codec
