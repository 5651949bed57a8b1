"""One rank of the DDP test (tests/test_lm_trainer.py), launched by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/lm_ddp_worker.py \
        CACHE RUN_DIR STEPS BATCH CROP_S OUT.json

Trains the toy coarse stage for STEPS steps at per-rank batch BATCH on crops of CROP_S seconds;
rank 0 writes the global loss of every step to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lm_fixtures import CoarseToyStage

from continuo.server.training.lm_trainer import LMTrainConfig, LMTrainer


def main(cache: str, run_dir: str, steps: str, batch: str, crop_s: str, out: str) -> None:
    torch.set_num_threads(1)
    config = LMTrainConfig(steps=int(steps), batch_size=int(batch), crop_seconds=float(crop_s),
                           warmup_steps=2, learning_rate=3e-3, device="cpu")
    trainer = LMTrainer(CoarseToyStage(), Path(cache), Path(run_dir), config, progress=False)
    assert trainer.dist.world_size == 2 and dist.is_initialized()
    losses = [trainer.train_step()["loss"] for _ in range(int(steps))]
    if trainer.dist.is_main:
        Path(out).write_text(json.dumps(losses))
    say = f"rank {trainer.dist.rank}:"
    print(say, "trained", file=sys.stderr, flush=True)  # where it got to, should a rank fail
    trainer.release()
    trainer.dist.close()
    print(say, "left the process group", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
