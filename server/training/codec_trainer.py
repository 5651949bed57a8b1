"""Train the small codec on a data folder, in as many sittings as it takes.

    continuo train codec data/piano --out runs/codec --minutes 60     # again later: it resumes

RUN_DIR holds `checkpoint/` (the last state: a codec folder plus optimiser, RNG and step, written
every few minutes and at exit, Ctrl-C included), `best/` (the codec with the best held-out SI-SDR
at the top bandwidth, a folder `SmallCodec.load` reads), `eval.jsonl` (every evaluation) and
`tb/` (TensorBoard: losses, grad norm, steps/s, held-out metrics per bandwidth).

Recipe (NOTES-codec.md): random crops of the train split held in memory as int16, each divided
by its RMS then given a random gain; the quantiser bypassed for `warmup_steps`, then its
codebooks k-means-initialised on the partly trained latents; a random number of codebooks per
step (quantiser dropout); L1 waveform + multi-scale mel/STFT losses (+ MS-STFT discriminator).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from continuo.server.data.manifest import ManifestItem, load_manifest
from continuo.server.errors import ConfigError, DataError
from continuo.server.evaluation.codec_metrics import bandwidth_label, evaluate_codec
from continuo.server.tokenizers.small_codec import (
    KIND,
    SmallCodec,
    SmallCodecConfig,
    SmallCodecModel,
    rms_normalize,
    with_ema_sums,
)
from continuo.server.training import codec_losses as L
from continuo.server.training.checkpoint import (
    TrainingCheckpoint,
    has_checkpoint,
    load_model_folder,
    load_training_checkpoint,
    save_training_checkpoint,
)

log = logging.getLogger(__name__)
BEST_METRIC = "si_sdr_db"  # at the top bandwidth; higher is better
DEFAULT_LR = 3e-4  # AdamW rate of a new run


@dataclass(frozen=True)
class CodecTrainConfig:
    """One sitting's settings (the model's architecture lives in SmallCodecConfig)."""

    steps: int | None = None  # total steps over all sittings; None: until `minutes` or Ctrl-C
    minutes: float | None = None  # bound on this sitting
    batch_size: int = 8
    crop_seconds: float = 1.0
    # None: DEFAULT_LR for a new run, the run's own rate on resume; a number is applied either way
    # (lower it for a last sitting: the optimiser state is kept, only the rate changes).
    learning_rate: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 1e-2
    grad_clip: float = 10.0
    warmup_steps: int = 300  # quantiser bypassed before this step
    init_vectors: int = 8192  # latent vectors the codebooks are k-means-initialised on
    level_augment_db: float = 6.0  # random gain ± this after RMS normalisation
    discriminator: bool = False
    # Codebook counts a step draws from; None: the codec's codebook_choices (quantiser dropout).
    # E.g. (8,) for a last sitting at the bandwidth the stages use (6 kbps at 75 Hz).
    train_codebooks: tuple[int, ...] | None = None
    eval_every: int = 500
    eval_clips: int = 20
    eval_seconds: float = 10.0
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    # A codec folder (e.g. the shipped models/piano/codec) a NEW run starts from: its weights,
    # architecture and step count, with a fresh optimiser. Ignored when RUN_DIR has a checkpoint.
    init_from: Path | None = None
    loss_weights: L.CodecLossWeights = field(default_factory=L.CodecLossWeights)

    def __post_init__(self) -> None:
        positive = ("batch_size", "crop_seconds", "grad_clip", "init_vectors",
                    "eval_every", "eval_clips", "eval_seconds", "checkpoint_minutes", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"train {name} must be > 0, got {getattr(self, name)}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"train learning_rate must be > 0, got {self.learning_rate}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"train minutes must be > 0, got {self.minutes}")
        if self.train_codebooks is not None and (
                not self.train_codebooks or min(self.train_codebooks) < 1):
            raise ConfigError(f"train codebooks must be >= 1, got {self.train_codebooks}")
        if self.warmup_steps < 0 or self.level_augment_db < 0:
            raise ConfigError("train warmup_steps and level_augment_db must be >= 0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Flush denormal floats to zero inside the block, then restore the previous mode.

    Denormals made CPU steps 40× slower soon after the quantiser init in a trial here (tiny
    gradients squared by AdamW). The mode is processor state of the thread (it also changes
    Python's and numpy's float maths), so it is never left on for the caller.
    """
    was_on = bool(torch.tensor([torch.finfo(torch.float32).tiny]).div(2).eq(0).item())
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def load_clips(items: list[ManifestItem], sample_rate: int) -> list[np.ndarray]:
    """Every item's audio, mono int16, held in memory."""
    clips = []
    for item in tqdm(items, desc="loading audio", unit="file", leave=False):
        try:
            audio, rate = sf.read(item.path, dtype="int16", always_2d=True)
        except (OSError, RuntimeError) as err:
            raise DataError(f"{item.path}: cannot read audio ({err})") from err
        if rate != sample_rate:
            raise DataError(f"{item.path}: sample rate {rate} Hz, the codec needs {sample_rate}")
        clips.append(audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1).astype(np.int16))
    return clips


class CropSampler:
    """Random crops, items weighted by length; near-silent crops (< −60 dBFS RMS) redrawn."""

    def __init__(self, clips: list[np.ndarray], crop_samples: int, rng: np.random.Generator):
        self.clips, self.crop_samples, self.rng = clips, crop_samples, rng
        lengths = np.array([len(c) for c in clips], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def crop(self) -> np.ndarray:
        for _ in range(10):
            clip = self.clips[self.rng.choice(len(self.clips), p=self.weights)]
            start = int(self.rng.integers(0, max(1, len(clip) - self.crop_samples + 1)))
            out = clip[start : start + self.crop_samples].astype(np.float32) / 32768.0
            out = np.pad(out, (0, self.crop_samples - len(out)))
            if np.sqrt(np.mean(out**2)) >= 1e-3:
                break
        return out

    def batch(self, batch_size: int) -> np.ndarray:
        """[B, crop_samples] float32."""
        return np.stack([self.crop() for _ in range(batch_size)])


def spread(items: list[ManifestItem], n: int) -> list[ManifestItem]:
    """Up to n items evenly spaced through the (path-sorted) list: many pieces, not one."""
    picks = np.unique(np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int))
    return [items[i] for i in picks]


@dataclass(frozen=True)
class TrainSummary:
    start_step: int
    step: int
    best_metric: float | None
    last_eval: dict[str, dict[str, float]] | None
    stopped_by: str  # "steps", "minutes" or "interrupt"


class CodecTrainer:
    """Builds or resumes a run in RUN_DIR; `run()` trains one sitting."""

    def __init__(self, data_root: Path, run_dir: Path, model_config: SmallCodecConfig,
                 config: CodecTrainConfig, progress: bool = True):
        self.run_dir, self.config, self.progress = Path(run_dir), config, progress
        manifest = load_manifest(data_root)
        train_items, valid_items = manifest.split("train"), manifest.split("valid")
        for split, items in (("train", train_items), ("valid", valid_items)):
            if not items:
                raise DataError(f"{manifest.path}: the {split} split is empty")
        ckpt, model_config = self._find_checkpoint(model_config)
        start = None
        if ckpt is None and config.init_from is not None:
            start = load_model_folder(config.init_from, KIND)
            model_config = SmallCodecConfig.from_dict(start.config)
        if manifest.sample_rate != model_config.sample_rate:
            raise DataError(f"{manifest.path}: sample rate {manifest.sample_rate} Hz, the codec "
                            f"needs {model_config.sample_rate}")
        torch.manual_seed(config.seed)  # a fresh run's weights; a resumed run restores the RNG
        self._build(model_config)
        self.step, self.best, self.last_eval_step = 0, None, None
        self.last_eval: dict[str, dict[str, float]] | None = None
        self.rng = np.random.default_rng(config.seed)
        if ckpt is not None:
            self._restore(ckpt)
        elif start is not None:
            self.model.load_state_dict(with_ema_sums(start.state_dict))  # exports drop them
            self.step = int(start.extra.get("step", 0))
            log.info("new run from %s (step %d), fresh optimiser", config.init_from, self.step)
        crop = round(config.crop_seconds * model_config.sample_rate)
        self.sampler = CropSampler(load_clips(train_items, manifest.sample_rate), crop, self.rng)
        self.eval_items = spread(valid_items, config.eval_clips)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def _find_checkpoint(
        self, model_config: SmallCodecConfig
    ) -> tuple[TrainingCheckpoint | None, SmallCodecConfig]:
        """RUN_DIR's checkpoint and its architecture, or (None, the architecture asked for)."""
        if not has_checkpoint(self.checkpoint_dir):
            return None, model_config
        ckpt = load_training_checkpoint(self.checkpoint_dir, KIND)
        stored = SmallCodecConfig.from_dict(ckpt.model.config)
        if stored != model_config:
            log.warning("%s: resuming with the run's own architecture (%s decoder, %g Hz); the "
                        "architecture asked for now is ignored", self.checkpoint_dir,
                        stored.decoder, stored.frame_rate)
        return ckpt, stored

    def _build(self, model_config: SmallCodecConfig) -> None:
        c = self.config
        self.codebook_choices = c.train_codebooks or model_config.codebook_choices
        if max(self.codebook_choices) > model_config.n_codebooks:
            raise ConfigError(f"train codebooks {self.codebook_choices}: the codec has "
                              f"{model_config.n_codebooks}")
        self.device = resolve_device(c.device)
        self.model = SmallCodecModel(model_config).to(self.device).train()
        self.spectral = L.MultiScaleSpectralLoss(model_config.sample_rate).to(self.device)
        adamw = {"lr": c.learning_rate or DEFAULT_LR, "betas": c.betas,
                 "weight_decay": c.weight_decay}
        self.opt = torch.optim.AdamW(self.model.parameters(), **adamw)
        self.disc = self.opt_d = None
        if c.discriminator:
            self.disc = L.MultiScaleSTFTDiscriminator().to(self.device).train()
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), **adamw)

    def _restore(self, ckpt: TrainingCheckpoint) -> None:
        self.model.load_state_dict(ckpt.model.state_dict)
        self.opt.load_state_dict(ckpt.optimizers["optimizer"])
        if self.disc is not None and "discriminator" in ckpt.optimizers:
            self.disc.load_state_dict(ckpt.optimizers["discriminator"])
            self.opt_d.load_state_dict(ckpt.optimizers["discriminator_optimizer"])
        state = ckpt.state
        self.step, self.best = int(state["step"]), state.get("best_metric")
        self.last_eval_step = state.get("last_eval_step")
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(ckpt.torch_rng)
        if self.config.learning_rate is not None:
            optimizers = [o for o in (self.opt, self.opt_d) if o is not None]
            for group in (g for o in optimizers for g in o.param_groups):
                group["lr"] = self.config.learning_rate
        log.info("resumed %s at step %d, learning rate %.3g", self.checkpoint_dir, self.step,
                 self.opt.param_groups[0]["lr"])

    # --- one step ---------------------------------------------------------------------------

    def _batch(self) -> torch.Tensor:
        """Normalised, level-augmented crops [B, 1, T] on the device."""
        crops = torch.from_numpy(self.sampler.batch(self.config.batch_size))[:, None]
        normalized, _ = rms_normalize(crops)
        gain_db = self.rng.uniform(-1, 1, size=(len(crops), 1, 1)) * self.config.level_augment_db
        return (normalized * torch.from_numpy(10 ** (gain_db / 20)).float()).to(self.device)

    def _init_quantizer(self) -> None:
        """k-means the codebooks on latents of fresh crops (the end of the warm-up)."""
        per_batch = self.config.batch_size * math.ceil(self.sampler.crop_samples
                                                       / self.model.config.hop_length)
        latents = []
        with torch.no_grad():
            for _ in range(math.ceil(self.config.init_vectors / per_batch)):
                z = self.model.encode_latents(self._batch())  # [B, D, F]
                latents.append(z.transpose(1, 2).reshape(-1, z.shape[1]))
        self.model.init_quantizer(torch.cat(latents)[: self.config.init_vectors])

    def _adversarial(self, audio: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Discriminator update, then the generator's adversarial and feature losses."""
        loss_d = L.discriminator_loss(self.disc(target), self.disc(audio.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        adversarial, feature = L.generator_adversarial_losses(self.disc(target), self.disc(audio))
        return {"adversarial": adversarial, "feature": feature, "discriminator": loss_d.detach()}

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the loss terms (NaN/inf steps are skipped)."""
        if self.step >= self.config.warmup_steps and not self.model.quantizer_initialized:
            self._init_quantizer()
        x = self._batch()
        n_q = 0
        if self.model.quantizer_initialized:
            n_q = int(self.rng.choice(self.codebook_choices))
        out = self.model(x, n_q)
        terms = {"wave": (out.audio - x).abs().mean(), "spectral": self.spectral(out.audio, x),
                 "commit": out.commit_loss}
        if self.disc is not None and n_q > 0:
            terms.update(self._adversarial(out.audio, x))
        w = asdict(self.config.loss_weights)
        total = sum(w[k] * v for k, v in terms.items() if k in w)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(total):
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                       self.config.grad_clip)
            self.opt.step()
        else:
            log.warning("step %d: non-finite loss, step skipped", self.step)
            grad_norm = torch.tensor(float("nan"))
        self.step += 1
        return {"total": float(total.detach()), "grad_norm": float(grad_norm), "n_q": n_q,
                **{k: float(v.detach()) for k, v in terms.items()}}

    # --- evaluation and checkpoints ------------------------------------------------------------

    def evaluate(self, writer: SummaryWriter) -> dict[str, dict[str, float]]:
        """Held-out metrics at each training bandwidth; exports best/ when the best improves."""
        codec = SmallCodec(self.model)  # shares the weights; switches the model to eval
        mc = self.model.config
        bandwidths = [n * mc.kbps_per_codebook for n in sorted(set(mc.codebook_choices))]
        try:
            results = evaluate_codec(codec, self.eval_items, self.config.eval_seconds, bandwidths)
        finally:
            self.model.train()
        for label, metrics in results.items():
            for name, value in metrics.items():
                writer.add_scalar(f"eval/{label}/{name}", value, self.step)
        with open(self.run_dir / "eval.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, **results}) + "\n")
        score = results[bandwidth_label(bandwidths[-1])][BEST_METRIC]
        if math.isfinite(score) and (self.best is None or score > self.best):
            self.best = score
            codec.save(self.run_dir / "best", extra={"step": self.step, "metrics": results})
            log.info("step %d: new best %s %.2f → %s", self.step, BEST_METRIC, score,
                     self.run_dir / "best")
        self.last_eval_step, self.last_eval = self.step, results
        return results

    def save_checkpoint(self) -> Path:
        states: dict[str, Any] = {"optimizer": self.opt.state_dict()}
        if self.disc is not None:
            states["discriminator"] = self.disc.state_dict()
            states["discriminator_optimizer"] = self.opt_d.state_dict()
        state = {"step": self.step, "best_metric": self.best, "last_eval_step": self.last_eval_step,
                 "rng": self.rng.bit_generator.state, "train_config": asdict(self.config)}
        return save_training_checkpoint(self.checkpoint_dir, self.model.state_dict(), KIND,
                                        self.model.config.to_dict(), states, state)

    # --- the sitting ------------------------------------------------------------------------

    def _stop_reason(self, deadline: float | None) -> str | None:
        if self.config.steps is not None and self.step >= self.config.steps:
            return "steps"
        if deadline is not None and time.monotonic() >= deadline:
            return "minutes"
        return None

    def _log(self, writer: SummaryWriter, terms: dict[str, float], bar: tqdm, rate: float) -> None:
        for name, value in terms.items():
            writer.add_scalar(f"train/{name}", value, self.step)
        writer.add_scalar("train/steps_per_s", rate, self.step)
        bar.set_postfix(loss=f"{terms['total']:.3f}", spec=f"{terms['spectral']:.3f}",
                        n_q=terms["n_q"], steps_s=f"{rate:.2f}")

    def run(self) -> TrainSummary:
        """Train until `steps`, `minutes` or Ctrl-C; checkpoint (and evaluate) at the end."""
        with flushing_denormals():
            return self._run()

    def _run(self) -> TrainSummary:
        c, start_step = self.config, self.step
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if c.minutes is None else time.monotonic() + 60 * c.minutes
        writer = SummaryWriter(self.run_dir / "tb", purge_step=self.step or None)
        bar = tqdm(total=c.steps, initial=self.step, unit="step", disable=not self.progress)
        last_save = t_log = time.monotonic()
        step_log = self.step
        try:
            while (stopped := self._stop_reason(deadline)) is None:
                terms = self.train_step()
                bar.update(1)
                if self.step % c.log_every == 0:
                    now = time.monotonic()
                    self._log(writer, terms, bar, (self.step - step_log) / (now - t_log))
                    t_log, step_log = now, self.step
                if self.step % c.eval_every == 0 and self.model.quantizer_initialized:
                    self.evaluate(writer)
                if time.monotonic() - last_save >= 60 * c.checkpoint_minutes:
                    self.save_checkpoint()
                    last_save = time.monotonic()
            if self.model.quantizer_initialized and self.last_eval_step != self.step:
                self.evaluate(writer)
        except KeyboardInterrupt:
            stopped = "interrupt"
            raise
        finally:
            bar.close()
            if stopped is not None:  # a normal end or Ctrl-C; not after a crash
                log.info("saved %s at step %d", self.save_checkpoint(), self.step)
            writer.close()
        return TrainSummary(start_step, self.step, self.best, self.last_eval, stopped)


def train_codec(data_root: Path, run_dir: Path, model_config: SmallCodecConfig,
                config: CodecTrainConfig, progress: bool = True) -> TrainSummary:
    """Train (or resume) a run: the entry point of `continuo train codec`."""
    return CodecTrainer(data_root, run_dir, model_config, config, progress).run()
