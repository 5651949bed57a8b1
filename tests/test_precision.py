"""Mixed-precision inference (model/precision.py): float16 steps and bfloat16 prefills give the
float32 model's logits within rounding, cached decoding still matches, and a preset selects it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401

from continuo.server.continuation import Continuation
from continuo.server.errors import ConfigError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.precision import MixedLinear, with_precision

CONFIG = DecoderConfig(vocab_size=96, n_layers=2, n_heads=4, d_model=128, d_ff=512,
                       max_seq_len=256)


def _pair(cls=Decoder, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    exact = cls(CONFIG, **kwargs).eval()
    mixed = cls(CONFIG, **kwargs)
    mixed.load_state_dict(exact.state_dict())
    return exact, with_precision(mixed, "mixed")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 0.03 * scale
    assert not torch.equal(a, b)  # it really computed in lower precision


@torch.inference_mode()
def test_mixed_decoder_matches_float32_in_prefill_and_steps() -> None:
    exact, mixed = _pair()
    assert sum(isinstance(m, MixedLinear) for m in mixed.modules()) == 2 * 4  # qkv, proj, fc, out
    tokens = torch.randint(0, 96, (1, 60))
    _close(exact(tokens), mixed(tokens))  # 60 rows: the bfloat16 path
    caches = exact.new_cache(1, 80), mixed.new_cache(1, 80)
    exact.step(tokens, caches[0])
    mixed.step(tokens, caches[1])
    for t in range(10):  # one row each: a step, unpadded
        token = torch.randint(0, 96, (1, 1))
        a, _ = exact.step(token, caches[0])
        b, _ = mixed.step(token, caches[1])
        _close(a, b)
        if t == 0:
            assert a.argmax() == b.argmax()  # the same greedy token


@torch.inference_mode()
def test_mixed_column_decoder_matches_float32() -> None:
    exact, mixed = _pair(ColumnDecoder, n_levels=3, level_vocab_size=32)
    tokens = torch.randint(0, 96, (1, 3, 40))
    _close(exact(tokens), mixed(tokens))
    assert not any(p.requires_grad for p in mixed.parameters()) and not mixed.training


def test_float32_is_unchanged_and_unknown_precision_is_named() -> None:
    model = Decoder(CONFIG)
    assert with_precision(model, "float32") is model
    assert not any(isinstance(m, MixedLinear) for m in model.modules())
    with pytest.raises(ConfigError, match="precision"):
        with_precision(model, "int4")


def test_a_preset_selects_mixed_precision(model_dir: Path, tmp_path: Path) -> None:
    piano = render_piano(progression_notes(), 24000)[:24000]
    exact = Continuation(write_preset(tmp_path, model_dir))
    (tmp_path / "mixed").mkdir()
    mixed = Continuation(write_preset(tmp_path / "mixed", model_dir, 'precision = "mixed"\n'))
    assert any(isinstance(m, MixedLinear) for m in mixed.stages["coarse"][1].modules())
    a = exact.generate(piano, 24000, seconds=0.4, seed=3)
    b = mixed.generate(piano, 24000, seconds=0.4, seed=3)
    assert a.audio.shape == b.audio.shape and np.isfinite(b.audio).all()
    (tmp_path / "bad").mkdir()
    with pytest.raises(ConfigError, match="precision"):
        Continuation(write_preset(tmp_path / "bad", model_dir, 'precision = "int4"\n'))
