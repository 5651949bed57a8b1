"""Times audiolm-pytorch 2.4.0's three transformers on the stages workload (run in .bench-venv).

    .bench-venv/bin/python tests/bench/audiolm_runner.py '{"dim": 256, "depth": 4, ...}'

prints one JSON line: per stage the measured prefill seconds, the per-step seconds at the first,
middle and last generated position, and the stage's extrapolated total. Each step is the
generate loop of audiolm-pytorch's *Wrapper.generate (KV cache on, cond_scale 1 so no
classifier-free-guidance second pass, top-k then Gumbel sampling): the transformer's
forward_with_cond_scale on the whole id sequence with the caches of the previous step.

Only `steps` steps are run at each of three positions, not the whole continuation: after the real
prefill of the prompt, the steps at the first new position are real; for the middle and the last
position the token ids and the KV/embedding caches are lengthened by repeating their own
content (what the values are does not change the time). The stage total is
prefill + (n_new - 1) · Simpson's mean of the three per-step medians, exact when the step time
is a quadratic of the position (its relative-position bias is rebuilt as [h, L, L] every step).

Runs in its own environment (audiolm-pytorch, no project imports): argv[1] is a JSON object with
dim, depth, heads, threads, steps, and per stage the prompt and new token counts.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer, t5
from audiolm_pytorch.audiolm_pytorch import gumbel_sample, top_k
from transformers import T5Config

Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


def _sample(logits: torch.Tensor) -> torch.Tensor:
    """Last position's logits [B, T, V] → [B, 1] (the wrappers' top-k 0.9 + Gumbel)."""
    last = logits[:, -1]
    last[:, -1] = float("-inf")  # no EOS mid-frame, as the wrappers do
    return gumbel_sample(top_k(last, thres=0.9), temperature=1.0, dim=-1)[:, None]


def _lengthen(
    ids: torch.Tensor, cache: object, n: int, multiple: int
) -> tuple[torch.Tensor, object]:
    """ids [B, L] and its caches → n more positions (a multiple of `multiple`), repeated content."""
    n -= n % multiple
    if n <= 0:
        return ids, cache
    reps = -(-n // ids.shape[1])

    def grow(t: torch.Tensor, dim: int) -> torch.Tensor:
        extra = torch.cat([t] * reps, dim=dim).narrow(dim, 0, n)
        return torch.cat([extra, t], dim=dim)

    grown = tuple(grow(c, -2) for c in cache) if isinstance(cache, tuple) else grow(cache, -2)
    return grow(ids, 1), grown


def _timed_steps(step: Step, ids: torch.Tensor, cache: object, steps: int) -> list[float]:
    times = []
    for _ in range(steps + 1):  # the first step after a change of length is a warm-up
        start = time.perf_counter()
        logits, cache = step(ids, cache)
        ids = torch.cat([ids, _sample(logits)], dim=1)
        times.append(time.perf_counter() - start)
    return times[1:]


def _stage(step: Step, prompt: torch.Tensor, n_new: int, steps: int, multiple: int) -> dict:
    """Prefill of prompt [B, L] and steps at the first, middle and last new position."""
    start = time.perf_counter()
    logits, cache = step(prompt, None)
    prefill_s = time.perf_counter() - start
    ids = torch.cat([prompt, _sample(logits)], dim=1)
    per_step = []
    for offset in (0, n_new // 2, n_new - steps - 1):
        longer, grown = _lengthen(ids, cache, offset, multiple)
        per_step.append(statistics.median(_timed_steps(step, longer, grown, steps)))
    first, middle, last = per_step
    mean_step = (first + 4 * middle + last) / 6
    return {
        "prefill_s": prefill_s, "step_s": per_step, "steps_timed": 3 * steps,
        "total_s": prefill_s + (n_new - 1) * mean_step,
    }


def _semantic(cfg: dict) -> dict:
    model = SemanticTransformer(
        num_semantic_tokens=cfg["semantic_vocab"], dim=cfg["dim"], depth=cfg["depth"],
        heads=cfg["heads"], cond_dim=cfg["dim"],
    ).eval()

    def step(ids, cache):
        return model.forward_with_cond_scale(
            ids=ids, cond_scale=1.0, kv_cache=cache, return_kv_cache=True
        )

    prompt = torch.randint(0, cfg["semantic_vocab"], (1, cfg["semantic_prompt"]))
    return _stage(step, prompt, cfg["semantic_new"], cfg["steps"], 1)


def _coarse(cfg: dict) -> dict:
    q = cfg["n_coarse"]
    model = CoarseTransformer(
        num_semantic_tokens=cfg["semantic_vocab"], codebook_size=cfg["codebook_size"],
        num_coarse_quantizers=q, dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"],
        cond_dim=cfg["dim"],
    ).eval()
    n_sem = cfg["semantic_prompt"] + cfg["semantic_new"]
    semantic = torch.randint(0, cfg["semantic_vocab"], (1, n_sem))

    def step(ids, cache):
        kv, embed = cache if cache is not None else (None, None)
        (_, logits), caches = model.forward_with_cond_scale(
            coarse_token_ids=ids, semantic_token_ids=semantic, cond_scale=1.0,
            return_kv_cache=True, kv_cache=kv, embed_cache=embed,
            return_only_coarse_logits=True,
        )
        return logits, caches

    prompt = torch.randint(0, cfg["codebook_size"], (1, cfg["coarse_prompt_frames"] * q))
    return _stage(step, prompt, cfg["coarse_new_frames"] * q, cfg["steps"], q)


def _fine(cfg: dict) -> dict:
    q, k = cfg["n_coarse"], cfg["n_fine"]
    model = FineTransformer(
        num_coarse_quantizers=q, num_fine_quantizers=k, codebook_size=cfg["codebook_size"],
        dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"], cond_dim=cfg["dim"],
    ).eval()
    frames = cfg["fine_prompt_frames"] + cfg["fine_new_frames"]
    coarse = torch.randint(0, cfg["codebook_size"], (1, frames * q))

    def step(ids, cache):
        kv, embed = cache if cache is not None else (None, None)
        (_, logits), caches = model.forward_with_cond_scale(
            coarse_token_ids=coarse, fine_token_ids=ids, cond_scale=1.0,
            return_kv_cache=True, kv_cache=kv, embed_cache=embed, return_only_fine_logits=True,
        )
        return logits, caches

    prompt = torch.randint(0, cfg["codebook_size"], (1, cfg["fine_prompt_frames"] * k))
    return _stage(step, prompt, cfg["fine_new_frames"] * k, cfg["steps"], k)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    # The constructors look up the T5 text encoder's width even without text conditioning
    # (cond_dim set, so unused): a local config instead of a download.
    t5.T5_CONFIGS[t5.DEFAULT_T5_NAME] = {"config": T5Config(d_model=cfg["dim"])}
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    with torch.inference_mode():
        result = {"semantic": _semantic(cfg), "coarse": _coarse(cfg), "fine": _fine(cfg)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
