#!/usr/bin/env bash
# Builds .bench-venv/ with audiolm-pytorch 2.4.0 for the stages benchmark, on the CPU torch.
#
#   tests/bench/audiolm_env.sh [VENV]      (default .bench-venv; idempotent, needs network once)
#
# Recipe (a plain `pip install audiolm-pytorch` would pull torchaudio, which has no release for
# torch 2.13, and with it a CUDA torch):
#   1. torch==2.13.0 first (the CPU wheel on this disk);
#   2. audiolm-pytorch==2.4.0 with --no-deps;
#   3. its dependencies that install cleanly, with their own dependencies (pip keeps torch 2.13.0:
#      the script checks it): einops beartype packaging ema-pytorch local-attention
#      vector-quantize-pytorch hyper-connections gateloop-transformer accelerate transformers
#      joblib pytorch-warmup tqdm; encodec with --no-deps (its only extra dependency is
#      torchaudio);
#   4. import-only stubs for the three it imports at module level but the benchmarked
#      Semantic/Coarse/FineTransformer never call: torchaudio (no release for torch 2.13),
#      fairseq (does not build on Python 3.11) and wandb (logging only). Calling anything in a
#      stub raises.
set -euo pipefail
VENV="${1:-.bench-venv}"
STAMP="$VENV/.audiolm-stamp"
[ -f "$STAMP" ] && exit 0
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps audiolm-pytorch==2.4.0
"${PIP[@]}" einops beartype packaging ema-pytorch local-attention vector-quantize-pytorch \
    hyper-connections gateloop-transformer accelerate transformers joblib pytorch-warmup tqdm
"${PIP[@]}" --no-deps encodec==0.1.1
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
stub() {  # stub MODULE [SUBMODULE ...]: modules whose every attribute raises when called
    local root="$SITE/$1"; shift
    mkdir -p "$root"
    cat > "$root/__init__.py" <<'PY'
"""Import-only stub for the audiolm-pytorch benchmark (tests/bench/audiolm_env.sh)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise RuntimeError(f"{__name__}.{name} is a benchmark stub")

    return missing
PY
    for sub in "$@"; do cp "$root/__init__.py" "$root/$sub.py"; done
}
stub torchaudio functional transforms
stub fairseq
stub wandb
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"pip replaced torch: {torch.__version__}"
from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer  # noqa: F401
from audiolm_pytorch.version import __version__
assert __version__ == "2.4.0", __version__
print(f"audiolm-pytorch {__version__} on torch {torch.__version__}")
PY
touch "$STAMP"
