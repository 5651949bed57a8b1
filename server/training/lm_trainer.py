"""Train one AudioLM stage's decoder on a token cache, in as many sittings as it takes.

    train_stage(stage, cache_dir, run_dir, LMTrainConfig(steps=20_000, minutes=60))
    torchrun --nproc_per_node 4 -m continuo.server.cli train stage ...   # the same, on 4 ranks

RUN_DIR holds `checkpoint/` (decoder weights + config, optimiser and LR-schedule state, step,
torch RNG; written every few minutes and at exit), `best/` (the decoder with the lowest held-out
loss, a model folder of kind "lm_stage" that `model.loading.load_stage` rebuilds the stage and
its model from), `valid.jsonl` and `tb/` (TensorBoard). Both folders' config is the stage record
(`stage_to_dict`: stage name, decoder config and the stage's own config).

Each step: a batch of aligned windows (`WindowSampler`, a pure function of seed and step),
`stage.example(window)` each, padded along time to the longest (IGNORE_INDEX targets on pads),
the model from `stage.build_model()` (a `Decoder`, or a `ColumnDecoder` for the delay layout),
cross-entropy over the targets that carry a loss (logits [..., V] against targets [...]),
AdamW (weight decay on matrices only) with linear warm-up then cosine decay, gradient
clipping, bf16 autocast on CUDA (on CPU when asked).

Distributed (torchrun sets RANK / WORLD_SIZE): DistributedDataParallel, gloo on CPU, nccl on
GPU. The global batch is `batch_size` × world size: rank r takes windows r·b .. (r+1)·b − 1 of
the step's global batch, so a run on N ranks sees the same data as one process with N× the
batch. The loss is normalised by the global count of target tokens (one all-reduce), which
makes the averaged gradient that of the global batch exactly. Only rank 0 writes.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from continuo.server.errors import CheckpointError, ConfigError, DataError
from continuo.server.model.loading import KIND, stage_to_dict
from continuo.server.model.stage_api import IGNORE_INDEX, Stage, TokenWindow
from continuo.server.training.checkpoint import (
    has_checkpoint,
    load_model_folder,
    load_training_checkpoint,
    save_model_folder,
    save_training_checkpoint,
)
from continuo.server.training.codec_trainer import flushing_denormals, resolve_device
from continuo.server.training.distributed import Distributed
from continuo.server.training.token_cache import WindowSampler, open_token_cache

log = logging.getLogger(__name__)
__all__ = ["KIND", "Distributed", "LMTrainConfig", "LMTrainer", "collate", "train_stage"]
AMP_MODES = ("auto", "bf16", "off")


@dataclass(frozen=True)
class LMTrainConfig:
    """One sitting's settings (the decoder's size comes from the stage)."""

    steps: int | None = None  # total steps over all sittings; None: until `minutes` or Ctrl-C
    minutes: float | None = None  # bound on this sitting
    batch_size: int = 16  # per rank; the global batch is batch_size × world size
    crop_seconds: float = 10.0
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1  # the cosine ends at learning_rate × this
    warmup_steps: int = 200
    decay_steps: int | None = None  # end of the cosine; None: `steps` (constant LR if neither)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    amp: str = "auto"  # "auto": bf16 autocast on CUDA only; "bf16": also on CPU; "off"
    eval_every: int = 500
    eval_windows: int = 64
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    # A stage folder (e.g. models/piano/coarse_lm) whose weights a NEW run starts from, with a
    # fresh optimiser and schedule from step 0 (e.g. the stages again after the codec changed,
    # or on a user's own audio). Ignored when RUN_DIR has a checkpoint.
    init_from: Path | None = None

    def __post_init__(self) -> None:
        positive = ("batch_size", "crop_seconds", "learning_rate", "grad_clip", "eval_every",
                    "eval_windows", "checkpoint_minutes", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"train {name} must be > 0, got {getattr(self, name)}")
        for name in ("steps", "decay_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train {name} must be >= 1, got {getattr(self, name)}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"train minutes must be > 0, got {self.minutes}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("train warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train amp must be one of {AMP_MODES}, got {self.amp!r}")

    @property
    def schedule_steps(self) -> int | None:
        return self.decay_steps if self.decay_steps is not None else self.steps


def lr_factor(step: int, warmup_steps: int, decay_steps: int | None, min_ratio: float) -> float:
    """LR multiplier of optimiser step `step` (0-based): (step+1)/warmup during the warm-up,
    then a cosine from 1 down to `min_ratio` at `decay_steps`, `min_ratio` after it (constant
    1 after the warm-up when decay_steps is None)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps is None:
        return 1.0
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def collate(examples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """TrainingExamples → inputs [B, ..., T] (pads 0), targets [B, ..., T] (pads
    IGNORE_INDEX), padded along the last (time) dim: inputs [T] and targets [T] (flat,
    semantic) or inputs [R, T] and targets [K, T] (delay columns)."""
    longest = max(e.inputs.shape[-1] for e in examples)
    first = examples[0]
    inputs = torch.zeros(len(examples), *first.inputs.shape[:-1], longest, dtype=torch.long)
    targets = torch.full((len(examples), *first.targets.shape[:-1], longest), IGNORE_INDEX,
                         dtype=torch.long)
    for row, e in enumerate(examples):
        inputs[row, ..., : e.inputs.shape[-1]] = e.inputs
        targets[row, ..., : e.targets.shape[-1]] = e.targets
    return inputs, targets


@dataclass(frozen=True)
class LMTrainSummary:
    start_step: int
    step: int
    last_loss: float | None
    valid_loss: float | None
    best_valid_loss: float | None
    stopped_by: str  # "steps", "minutes" or "interrupt"


class LMTrainer:
    """Builds or resumes the run of one stage in RUN_DIR; `run()` trains one sitting."""

    def __init__(self, stage: Stage, cache_dir: Path, run_dir: Path, config: LMTrainConfig,
                 progress: bool = True, dist_info: Distributed | None = None) -> None:
        self.stage, self.run_dir, self.config = stage, Path(run_dir), config
        self.dist = Distributed.from_env() if dist_info is None else dist_info
        self.progress = progress and self.dist.is_main
        self.device = self._device()
        self.dist.init(self.device)
        cache = open_token_cache(cache_dir)
        self.sampler = WindowSampler(cache.split("train"), config.crop_seconds, config.seed)
        valid = WindowSampler(cache.split("valid"), config.crop_seconds, config.seed + 1)
        self.eval_set = valid.batch(0, config.eval_windows)  # fixed held-out windows
        torch.manual_seed(config.seed)  # same initial weights on every rank
        self.record = stage_to_dict(stage)  # what checkpoint/ and best/ store as config
        self.model = stage.build_model().to(self.device).train()
        cuda = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(self._param_groups(), lr=config.learning_rate,
                                     betas=config.betas, fused=cuda, foreach=not cuda)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.opt, partial(
            lr_factor, warmup_steps=config.warmup_steps, decay_steps=config.schedule_steps,
            min_ratio=config.min_lr_ratio))
        self.step, self.best, self.valid_loss = 0, None, None
        saved_rng = self._restore() if has_checkpoint(self.checkpoint_dir) else None
        if saved_rng is None and config.init_from is not None:
            self._start_from(Path(config.init_from))
        # Dropout draws: rank 0 continues the saved RNG; other ranks get their own seeds.
        if saved_rng is not None and self.dist.is_main:
            torch.set_rng_state(saved_rng)
        elif self.dist.rank > 0:
            torch.manual_seed(config.seed + 1000 * self.dist.rank + self.step)
        self.ddp = self._wrap()
        amp = config.amp == "bf16" or (config.amp == "auto" and self.device.type == "cuda")
        self.autocast = partial(torch.autocast, self.device.type, torch.bfloat16, enabled=amp)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def _device(self) -> torch.device:
        device = resolve_device(self.config.device)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        return device

    def _param_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices (linear weights, embeddings), none on biases and norms."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() >= 2],
                 "weight_decay": self.config.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def _wrap(self) -> torch.nn.Module:
        if not self.dist.enabled:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # The decoder's buffers are constants (bucket tables): nothing to sync per step.
        return DistributedDataParallel(self.model, device_ids=ids, forward_sync_buffers=False)

    def release(self) -> None:
        """Let go of the DDP wrapper, whose reducer holds the process group: it must be gone
        before the group is destroyed, not left to the interpreter's exit, where gloo's threads
        can abort the process (SIGABRT, "terminate called without an active exception")."""
        self.ddp = self.model
        gc.collect()

    def _restore(self) -> torch.Tensor:
        """Load checkpoint/ into the model, optimiser and schedule; returns the saved RNG."""
        ckpt = load_training_checkpoint(self.checkpoint_dir, KIND)
        if ckpt.model.config != self.record:
            raise CheckpointError(f"{self.checkpoint_dir}: a checkpoint of stage "
                                  f"{ckpt.model.config.get('stage')!r} with another config "
                                  f"than this {self.stage.name!r} stage's (size, layout, "
                                  f"window or tokenizers differ); resume with the same options "
                                  f"or use a new run folder")
        self.model.load_state_dict(ckpt.model.state_dict)
        self.opt.load_state_dict(ckpt.optimizers["optimizer"])
        self.scheduler.load_state_dict(ckpt.optimizers["scheduler"])
        self.step, self.best = int(ckpt.state["step"]), ckpt.state.get("best_valid_loss")
        self.valid_loss = ckpt.state.get("valid_loss")
        log.info("resumed %s at step %d", self.checkpoint_dir, self.step)
        return ckpt.torch_rng

    def _start_from(self, folder: Path) -> None:
        """A new run's weights from a stage folder of the same stage and decoder config."""
        stored = load_model_folder(folder, KIND, device=self.device)
        name, decoder = stored.config.get("stage"), stored.config.get("decoder")
        if name != self.stage.name or decoder != self.record["decoder"]:
            raise CheckpointError(f"{folder}: a {name!r} stage with decoder {decoder}, not this "
                                  f"{self.stage.name!r} stage's {self.record['decoder']}; start "
                                  f"from a stage folder of the same size, layout and window")
        self.model.load_state_dict(stored.state_dict)  # float16 exports are cast on copy
        log.info("new run from %s, fresh optimiser and schedule", folder)

    # --- one step ---------------------------------------------------------------------------

    def _examples(self, windows: list[TokenWindow]) -> tuple[torch.Tensor, torch.Tensor]:
        """The stage's examples of `windows`, padded, checked and on the device."""
        inputs, targets = collate([self.stage.example(w) for w in windows])
        vocab, longest = self.stage.decoder_config.vocab_size, inputs.shape[-1]
        if longest > self.stage.decoder_config.max_seq_len:
            raise ConfigError(f"stage {self.stage.name}: examples of {longest} tokens exceed the "
                              f"decoder's max_seq_len; lower crop_seconds")
        if inputs.min() < 0 or inputs.max() >= vocab or targets.max() >= vocab:
            raise DataError(f"stage {self.stage.name}: token ids outside the vocabulary of "
                            f"{vocab}; the cache and the stage do not fit")
        return inputs.to(self.device), targets.to(self.device)

    def _loss_sum(self, model: torch.nn.Module, inputs: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy over the targets that carry a loss (float32): logits [B, T, V]
        and targets [B, T], or per-level logits [B, K, T, V] and targets [B, K, T] (delay);
        `stages.stage_loss`'s reshape, summed instead of averaged (see the module doc)."""
        with self.autocast():
            logits = model(inputs)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the step's global batch; returns the global mean loss.

        Denormal floats are flushed to zero during the step, as in the codec trainer (there
        AdamW's squared tiny gradients made CPU steps 40× slower)."""
        with flushing_denormals():
            return self._train_step()

    def _train_step(self) -> dict[str, float]:
        b, rank = self.config.batch_size, self.dist.rank
        inputs, targets = self._examples(self.sampler.batch(self.step, b, first=rank * b))
        counts = self.dist.all_reduce((targets != IGNORE_INDEX).sum().float().reshape(1))
        if counts[0] < 1:
            raise DataError(f"stage {self.stage.name}: a batch with no target tokens")
        loss_sum = self._loss_sum(self.ddp, inputs, targets)
        # DDP averages gradients over ranks: × world_size / global count = the global mean's.
        (loss_sum * self.dist.world_size / counts[0]).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        total = self.dist.all_reduce(loss_sum.detach().clone())
        # Positions computed, pads included (what the hardware does), over all ranks.
        return {"loss": float(total / counts[0]), "grad_norm": float(grad_norm), "lr": lr,
                "tokens": float(inputs.shape[0] * inputs.shape[-1] * self.dist.world_size)}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss per target token on the fixed held-out windows (shared among ranks)."""
        self.model.eval()
        mine = self.eval_set[self.dist.rank :: self.dist.world_size]
        sums = torch.zeros(2, device=self.device)
        for i in range(0, len(mine), self.config.batch_size):
            inputs, targets = self._examples(mine[i : i + self.config.batch_size])
            sums[0] += self._loss_sum(self.model, inputs, targets)
            sums[1] += (targets != IGNORE_INDEX).sum()
        self.model.train()
        self.dist.all_reduce(sums)
        self.valid_loss = float(sums[0] / sums[1].clamp(min=1))
        return self.valid_loss

    # --- checkpoints, logs, the sitting -------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage.name, "valid_loss": self.valid_loss,
                "best_valid_loss": self.best, "world_size": self.dist.world_size,
                "train_config": asdict(self.config)}

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes checkpoint/ (other ranks: nothing, None)."""
        if not self.dist.is_main:
            return None
        optim = {"optimizer": self.opt.state_dict(), "scheduler": self.scheduler.state_dict()}
        return save_training_checkpoint(self.checkpoint_dir, self.model.state_dict(), KIND,
                                        self.record, optim, self._state())

    def _after_eval(self, writer: SummaryWriter | None) -> None:
        if not self.dist.is_main or self.valid_loss is None:
            return
        writer.add_scalar("valid/loss", self.valid_loss, self.step)
        with open(self.run_dir / "valid.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, "loss": self.valid_loss}) + "\n")
        if self.best is None or self.valid_loss < self.best:
            self.best = self.valid_loss
            save_model_folder(self.run_dir / "best", self.model.state_dict(), KIND, self.record,
                              {"stage": self.stage.name, "step": self.step,
                               "valid_loss": self.valid_loss})

    def _stop_reason(self, deadline: float | None) -> str | None:
        if self.config.steps is not None and self.step >= self.config.steps:
            return "steps"
        late = torch.tensor([float(deadline is not None and time.monotonic() >= deadline)])
        return "minutes" if self.dist.all_reduce(late.to(self.device)) > 0 else None

    def run(self) -> LMTrainSummary:
        """Train until `steps`, `minutes` or Ctrl-C; evaluate and checkpoint at the end."""
        c, start_step, last = self.config, self.step, None
        writer = None
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(self.run_dir / "tb", purge_step=self.step or None)
        deadline = None if c.minutes is None else time.monotonic() + 60 * c.minutes
        bar = tqdm(total=c.steps, initial=self.step, unit="step", disable=not self.progress)
        last_save = t_log = time.monotonic()
        tokens, stopped = 0.0, None
        try:
            while (stopped := self._stop_reason(deadline)) is None:
                terms = self.train_step()
                last, tokens = terms["loss"], tokens + terms["tokens"]
                bar.update(1)
                if self.step % c.log_every == 0:
                    now = time.monotonic()
                    self._log(writer, bar, terms, tokens / max(now - t_log, 1e-9))
                    t_log, tokens = now, 0.0
                if self.step % c.eval_every == 0:
                    self.evaluate()
                    self._after_eval(writer)
                if time.monotonic() - last_save >= 60 * c.checkpoint_minutes:
                    self.save_checkpoint()
                    last_save = time.monotonic()
            if self.step % c.eval_every != 0 or self.valid_loss is None:
                self.evaluate()
                self._after_eval(writer)
        except KeyboardInterrupt:
            stopped = "interrupt"
            raise
        finally:
            bar.close()
            if stopped is not None and self.step > start_step:
                saved = self.save_checkpoint()
                if saved is not None:
                    log.info("saved %s at step %d", saved, self.step)
            if writer is not None:
                writer.close()
        return LMTrainSummary(start_step, self.step, last, self.valid_loss, self.best, stopped)

    def _log(self, writer: SummaryWriter | None, bar: tqdm, terms: dict[str, float],
             tokens_per_s: float) -> None:
        if writer is None:
            return
        for name in ("loss", "grad_norm", "lr"):
            writer.add_scalar(f"train/{name}", terms[name], self.step)
        writer.add_scalar("train/tokens_per_s", tokens_per_s, self.step)
        bar.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{terms['lr']:.2e}",
                        tok_s=f"{tokens_per_s:.0f}")


def train_stage(stage: Stage, cache_dir: Path, run_dir: Path, config: LMTrainConfig,
                progress: bool = True) -> LMTrainSummary:
    """Train (or resume) one stage, alone or as one rank of a torchrun job (then the process
    group is joined here and left at the end, unless the caller had joined it: a caller that
    trains several stages keeps one group for all)."""
    joined = dist.is_initialized()
    trainer = LMTrainer(stage, cache_dir, run_dir, config, progress)
    try:
        return trainer.run()
    finally:
        trainer.release()
        if not joined:
            trainer.dist.close()
