"""Import encodec without torchaudio: the one place that knows about the workaround.

encodec 0.1.1 imports torchaudio at import time (`encodec/utils.py` for file I/O and resampling,
`encodec/msstftd.py` for its discriminator's spectrogram). PyPI's torchaudio does not load beside
torch 2.13, so the Makefile installs encodec with `--no-deps`. When torchaudio cannot be imported,
a placeholder module stands in for it just while encodec is imported, then is taken out of
`sys.modules` again (a module there without a spec breaks `importlib.util.find_spec`, which
transformers and others call). Continuo never calls those helpers: soundfile, soxr and
`torch.stft` do their jobs; touching the placeholder raises an error saying so.

Everything in Continuo imports encodec's pieces from here, never from `encodec` directly.
"""

from __future__ import annotations

import sys
import types
import warnings

import torch  # noqa: F401  (imported before the placeholder exists, so torch never sees it)


def _placeholder_torchaudio() -> types.ModuleType:
    module = types.ModuleType("torchaudio")

    def __getattr__(name: str) -> object:
        # AttributeError, so hasattr()/inspect treat the placeholder as an ordinary module.
        raise AttributeError(
            f"torchaudio.{name} is not available: encodec's torchaudio helpers are not used by "
            "Continuo (soundfile, soxr and torch.stft replace them)"
        )

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def _import_encodec() -> types.ModuleType:
    try:
        import torchaudio  # noqa: F401  (a working torchaudio, if the user has one)

        placeholder = False
    except Exception:  # ImportError, or a binary built for another torch failing to load
        sys.modules["torchaudio"] = _placeholder_torchaudio()
        placeholder = True
    try:
        with warnings.catch_warnings():  # encodec's weight_norm is deprecated on torch >= 2.1
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            import encodec
            import encodec.modules
            import encodec.quantization
    finally:
        if placeholder:
            del sys.modules["torchaudio"]
    return encodec


encodec = _import_encodec()
EncodecModel = encodec.EncodecModel
SEANetEncoder = encodec.modules.SEANetEncoder
SEANetDecoder = encodec.modules.SEANetDecoder
ResidualVectorQuantizer = encodec.quantization.ResidualVectorQuantizer

__all__ = [
    "EncodecModel",
    "ResidualVectorQuantizer",
    "SEANetDecoder",
    "SEANetEncoder",
    "encodec",
]
