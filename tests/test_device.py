"""Device-agnostic loading and precision (model/device.py, model/precision.py): device names
resolved or refused with the reason, bf16/fp16 stages close to float32 with the dtypes promised,
a tiny model loaded onto a device and generating there, and `continuo serve --device`.

This machine has no GPU: the CUDA paths are checked for what they say when CUDA is missing,
and the GPU precisions run on the CPU (as they do, slower)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401
from server_fixtures import free_port, start_server
from torch import nn

from continuo.server.continuation import Continuation, stage_folder
from continuo.server.engine.stream import TokenStream
from continuo.server.errors import CheckpointError, ConfigError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.device import DevicePolicy, resolve_device
from continuo.server.model.loading import load_stage
from continuo.server.model.precision import PRECISIONS, CastLinear, with_precision
from continuo.server.presets import Preset
from continuo.server.serve import ServeOptions
from continuo.server.training.checkpoint import load_model_folder

pytestmark = pytest.mark.timeout(240)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
CONFIG = DecoderConfig(vocab_size=96, n_layers=2, n_heads=4, d_model=128, d_ff=512,
                       max_seq_len=256)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SR = 24000


# --- resolve_device and the policy ---------------------------------------------------------------


def test_auto_and_cpu_resolve() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_so(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"device '{name}': CUDA is not available .*--device "
                                          "cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cuda:", "cuda:-1", "cuda:0:1", "mps"])
def test_other_names_list_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)


def test_mixed_means_bf16_on_cuda_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # descriptors: no GPU needed
    assert DevicePolicy(cpu, "mixed").precision == "mixed"
    assert DevicePolicy(cuda, "mixed").precision == "bf16"
    for precision in ("float32", "bf16", "fp16"):
        assert DevicePolicy(cpu, precision).precision == precision
        assert DevicePolicy(cuda, precision).precision == precision
    assert DevicePolicy(cpu, "mixed").describe() == "cpu, precision mixed"
    with pytest.raises(ConfigError, match="precision"):
        DevicePolicy(cpu, "int8")
    with pytest.raises(ConfigError, match="cpu or cuda"):
        DevicePolicy(torch.device("meta"), "float32")


def test_presets_allow_every_precision() -> None:
    assert set(get_args(Preset.model_fields["precision"].annotation)) == set(PRECISIONS)
    assert Preset(precision="bf16").precision == "bf16"


# --- bf16 / fp16 ---------------------------------------------------------------------------------


def _pair(precision: str, cls: type = Decoder, **kwargs) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    exact = cls(CONFIG, **kwargs).eval()
    low = cls(CONFIG, **kwargs)
    low.load_state_dict(exact.state_dict())
    return exact, with_precision(low, precision)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert b.dtype == torch.float32
    assert (a - b).abs().max().item() <= 0.03 * a.abs().max().item()
    assert not torch.equal(a, b)  # it really multiplied in lower precision


def _check_dtypes(model: nn.Module, dtype: torch.dtype) -> None:
    """Every Linear a CastLinear with `dtype` weights; everything else float32."""
    assert not any(type(m) is nn.Linear for m in model.modules())
    cast = [m for m in model.modules() if isinstance(m, CastLinear)]
    assert len(cast) == 4 * CONFIG.n_layers  # qkv, proj, up, down
    assert all(m.weight.dtype == dtype and m.bias.dtype == dtype for m in cast)
    low = {id(t) for m in cast for t in (m.weight, m.bias)}
    rest = [t for t in [*model.parameters(), *model.buffers()]
            if id(t) not in low and t.is_floating_point()]
    assert rest and all(t.dtype == torch.float32 for t in rest)  # embeddings, norms, bias table
    assert all(m.weight.dtype == torch.float32 for m in model.modules()
               if isinstance(m, nn.LayerNorm))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@torch.inference_mode()
def test_low_precision_decoder_is_close_to_float32(precision: str) -> None:
    exact, low = _pair(precision)
    _check_dtypes(low, DTYPES[precision])
    assert not low.training and not any(p.requires_grad for p in low.parameters())
    tokens = torch.randint(0, 96, (2, 50))
    _close(exact(tokens), low(tokens))
    caches = exact.new_cache(2, 70), low.new_cache(2, 70)
    assert caches[1].keys.dtype == torch.float32  # the KV cache stays float32
    exact.step(tokens, caches[0])
    low.step(tokens, caches[1])
    for _ in range(5):
        token = torch.randint(0, 96, (2, 1))
        _close(exact.step(token, caches[0])[0], low.step(token, caches[1])[0])


@torch.inference_mode()
def test_low_precision_keeps_the_output_heads_float32() -> None:
    exact, low = _pair("bf16", ColumnDecoder, n_levels=3, level_vocab_size=32)
    assert low.heads.dtype == torch.float32 and low.tok_emb.weight.dtype == torch.float32
    tokens = torch.randint(0, 96, (1, 3, 30))
    _close(exact(tokens), low(tokens))
    torch.manual_seed(0)
    untied = DecoderConfig(**{**CONFIG.to_dict(), "tie_embeddings": False})
    exact, low = Decoder(untied).eval(), Decoder(untied)
    low.load_state_dict(exact.state_dict())
    with_precision(low, "fp16")
    assert type(low.lm_head) is nn.Linear and low.lm_head.weight.dtype == torch.float32
    tokens = torch.randint(0, 96, (1, 20))
    _close(exact(tokens), low(tokens))


# --- loading onto a device -----------------------------------------------------------------------


def test_load_stage_reads_onto_the_device(model_dir: Path) -> None:
    folder = stage_folder(model_dir, "coarse")
    stored = load_model_folder(folder, "lm_stage", device="cpu").state_dict
    for device in ("cpu", torch.device("cpu")):
        _, model = load_stage(folder, device=device)
        tensors = [*model.parameters(), *model.buffers()]
        assert all(t.device == torch.device("cpu") for t in tensors)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in stored.items())  # the trained weights
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_stage(folder, device="cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_low_precision_pipeline_generates_on_its_device(model_dir: Path, tmp_path: Path,
                                                          precision: str) -> None:
    preset = write_preset(tmp_path, model_dir, f'precision = "{precision}"\n')
    pipeline = Continuation(preset, device="cpu")
    assert pipeline.device == torch.device("cpu") and pipeline.precision == precision
    for name, (_, model) in pipeline.stages.items():
        cast = [m for m in model.modules() if isinstance(m, CastLinear)]
        assert cast and all(m.weight.dtype == DTYPES[precision] for m in cast), name
        assert not any(type(m) is nn.Linear for m in model.modules()), name
    piano = render_piano(progression_notes(), SR)[:SR]
    result = pipeline.generate(piano, SR, seconds=0.4, seed=3)
    assert result.audio.shape == (round(0.4 * SR),) and np.isfinite(result.audio).all()
    assert np.abs(result.audio).max() > 1e-4  # music, not silence
    stream = TokenStream(pipeline)
    state = stream.start(piano, SR, seed=3, context_s=0.5)
    assert state.generator.device == pipeline.device
    assert state.codes.device == pipeline.device
    block, _ = stream.advance(state, stream.frames_for(state, SR // 10))
    assert block.audio.dtype == np.float32 and np.isfinite(block.audio).all()


def test_an_unavailable_device_fails_before_loading(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks a machine without CUDA")
    missing = write_preset(tmp_path, tmp_path / "no-model")
    with pytest.raises(ConfigError, match="CUDA"):  # not the missing model folder's error
        Continuation(missing, device="cuda")
    with pytest.raises(CheckpointError):
        Continuation(missing, device="cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        ServeOptions(device="cuda:1")
    with pytest.raises(ConfigError, match="not one of"):
        ServeOptions(device="gpu")


# --- continuo serve --device ---------------------------------------------------------------------


@no_cuda
def test_serve_on_cuda_without_cuda_exits_2_before_anything(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"  # read after the device check, so never read here
    done = subprocess.run(
        [sys.executable, "-m", "continuo.server.cli", "serve", "--device", "cuda",
         "--bind", f"tcp://127.0.0.1:{free_port()}", "--preset", str(missing)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "continuo: error: device 'cuda': CUDA is not available" in done.stderr
    assert "missing.toml" not in done.stderr and "serving on" not in done.stderr


def test_serve_reports_its_device_and_precision(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "serve", "--device", "cpu")
    try:
        with server.client(timeout_s=10.0) as client:
            hello = client.hello()
    finally:
        server.stop()
    assert hello["device"] == "cpu" and hello["precision"] == "float32"
    assert "on cpu, precision float32 in" in server.log_text()


# --- on a GPU (skipped here: no CUDA) ------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_mixed_preset_runs_as_bf16_on_the_gpu(model_dir: Path, tmp_path: Path) -> None:
    assert resolve_device("auto").type == "cuda"
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"out of range \\({count} visible"):
        resolve_device(f"cuda:{count}")
    pipeline = Continuation(write_preset(tmp_path, model_dir, 'precision = "mixed"\n'), "cuda")
    assert pipeline.device.type == "cuda" and pipeline.precision == "bf16"
    for _, model in pipeline.stages.values():
        assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
    piano = render_piano(progression_notes(), SR)[:SR]
    stream = TokenStream(pipeline)
    state = stream.start(piano, SR, seed=3, context_s=0.5)
    assert state.generator.device.type == "cuda" and state.codes.is_cuda
    assert state.semantic.is_cuda
    block, state = stream.advance(state, stream.frames_for(state, SR // 10))
    assert np.isfinite(block.audio).all() and state.codes.is_cuda
    result = pipeline.generate(piano, SR, seconds=0.4, seed=3)
    assert result.audio.shape == (round(0.4 * SR),) and np.isfinite(result.audio).all()
