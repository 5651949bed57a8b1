"""Offline continuation: a prompt clip in, the music that follows it out.

Model folder (MODEL_DIR, e.g. models/piano; a preset names it):

    MODEL_DIR/codec/        small-codec folder (model.safetensors + config.json)
    MODEL_DIR/semantic/     semantic tokenizer (centroids.safetensors + config.json)
    MODEL_DIR/semantic_lm/  the semantic stage: a `best/` folder written by the LM trainer
    MODEL_DIR/coarse_lm/    the coarse stage, likewise
    MODEL_DIR/fine_lm/      the fine stage, likewise

A stage folder is either the trainer's `best/` folder itself or a run folder holding `best/`
(so `continuo train stage coarse DATA --model-dir MODEL_DIR --out MODEL_DIR/coarse_lm` fills it).

The pipeline (`Continuation.generate`), at the codec's rate and frame grid:
1. the prompt is resampled to the codec rate and cut to its last `context_s` seconds, trimmed
   at its start to a whole number of semantic frames (960 samples at 24 kHz = 3 codec frames),
   so its end, the seam, stays exactly where the caller's clip ends;
2. semantic tokens of the prompt (S) → the semantic stage adds seconds × 25 tokens;
3. the coarse stage continues the prompt's coarse codes (frames P = 3·S onwards) conditioned on
   all semantic tokens; 4. the fine stage adds the fine codes of the new frames;
   the stages continue from the prompt minus its last `PROMPT_EDGE_SEMANTIC` semantic frame (and
   its 3 codec frames) and make that frame again (`drop_edge`): the tokenizers compute it with
   nothing after it (on 32 held-out clips it differs from the one computed with the true next
   second in 50 % of clips, the frame before in 6 %; the codec's last three frames in 81, 62
   and 34 %), an end-of-audio the stages never saw followed by music in training, and on a
   quiet ending they would start a new note right at the seam (one clip: seam flux 50× the
   median). The remade frame lies before the seam, so it is heard only in the lead-in;
5. prompt + new codes are decoded with up to `DECODE_CONTEXT_S` of the prompt as left context,
   and only the new frames' samples are kept: the continuation starts at frame P exactly. Its
   first `SPLICE_S` are shifted so that it starts from the prompt's last sample (a hard join
   without a click); the codec's rendering of the prompt's last `CROSSFADE_S` comes with it as
   `lead_in`, for a crossfaded join (`ContinuationResult.joined`; see `seam`). Both carry the
   responsible-use watermark (`continuo.server.watermark`) unless `generate(watermark=False)`.
Stages whose window is shorter than prompt + continuation continue window by window
(`fine_windows`), each window repeating the last three quarters of the window as its prompt.
Nothing here does I/O apart from reading the model folder and calling `progress`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from continuo.server.audio import check_samples, resample
from continuo.server.errors import AudioError, CheckpointError, ConfigError
from continuo.server.model.device import DevicePolicy, resolve_device
from continuo.server.model.generate import window_rounds
from continuo.server.model.loading import load_stage
from continuo.server.model.precision import with_precision
from continuo.server.model.sampling import pick_rows
from continuo.server.model.stages import CoarseStage, FineStage, SemanticStage, fine_windows
from continuo.server.presets import Preset, load_preset
from continuo.server.seam import CROSSFADE_S, SPLICE_S, codec_join, crossfade_join
from continuo.server.tokenizers.codec import EncodedAudio
from continuo.server.training.token_cache import Tokenizers, model_tokenizers
from continuo.server.watermark import embed

log = logging.getLogger(__name__)

STAGE_FOLDERS = {"semantic": "semantic_lm", "coarse": "coarse_lm", "fine": "fine_lm"}
STEPS = ("encode", "semantic", "coarse", "fine", "decode")
DECODE_CONTEXT_S = 1.0  # prompt audio decoded before the seam so the codec's state is warm
PROMPT_EDGE_SEMANTIC = 1  # the prompt's last semantic frames remade, not continued from
Progress = Callable[[str], None]  # called with each finished step of STEPS


@dataclass(frozen=True)
class ContinuationResult:
    """audio [T'] the continuation only (hard-join ready); prompt [T] the prompt as used
    (resampled, trimmed); lead_in [L] the codec's rendering of the prompt's last L samples,
    continuous with audio (L = CROSSFADE_S, less for a short prompt); all at sample_rate (the
    codec's). semantic [S + N_s], codes [K, P + N] all tokens (the prompt's kept ones first,
    then the remade edge and the new ones); timings_s per step; tokens: counts of the prompt's
    kept tokens and frames (prompt_semantic, prompt_frames), of those made (new_semantic,
    new_frames; the remade_semantic edge frames included), and the frame the audio starts at
    (seam_frame); watermarked: whether audio and lead_in carry the watermark (`watermark`)."""

    audio: np.ndarray
    prompt: np.ndarray
    lead_in: np.ndarray
    sample_rate: int
    semantic: torch.Tensor
    codes: torch.Tensor
    seed: int
    timings_s: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    watermarked: bool = False

    def joined(self) -> np.ndarray:
        """[T + T'] the prompt crossfaded into the continuation over its last L samples."""
        return crossfade_join(self.prompt, self.lead_in, self.audio)


def stage_folder(model_dir: Path, name: str) -> Path:
    """The `best/` folder of stage `name` in a model folder; CheckpointError saying how to train
    it when missing."""
    folder = Path(model_dir) / STAGE_FOLDERS[name]
    if (folder / "best").is_dir():
        return folder / "best"
    if folder.is_dir():
        return folder
    raise CheckpointError(
        f"{folder}: missing {name} stage; train it with `continuo train stage {name} DATA "
        f"--model-dir {model_dir} --out {folder}` (or `continuo train all`, then copy "
        f"RUNS/{name}/best there)"
    )


class Continuation:
    """The codec, semantic tokenizer and three stages of one preset, loaded once."""

    def __init__(self, preset: Preset | str | Path, device: str | torch.device = "cpu") -> None:
        """device: where codec and stages run ("cpu", "cuda", "cuda:N", "auto"; ConfigError if
        not available); the stages run at the preset's precision as `DevicePolicy` maps it."""
        self.preset = preset if isinstance(preset, Preset) else load_preset(preset)
        self.policy = DevicePolicy(resolve_device(str(device)), self.preset.precision)
        model_dir = self.preset.model_path
        if not model_dir.is_dir():
            raise CheckpointError(f"{model_dir}: model folder not found (preset "
                                  f"{self.preset.name!r} model_dir)")
        folders = {name: stage_folder(model_dir, name) for name in STAGE_FOLDERS}
        self.tokenizers: Tokenizers = model_tokenizers(model_dir, self.preset.bandwidth_kbps,
                                                       device=self.device)
        self.stages: dict[str, tuple[object, nn.Module]] = {}
        for name, folder in folders.items():
            stage, model = load_stage(folder, device=self.device)
            self.stages[name] = (stage, with_precision(model, self.precision))
        self.folders = folders
        self._check_stages()

    @property
    def device(self) -> torch.device:
        """Where the codec and the stages run (tokens and codes live there too)."""
        return self.policy.device

    @property
    def precision(self) -> str:
        """The stages' precision on this device (`model/device.py`: "mixed" is bf16 on a GPU)."""
        return self.policy.precision

    def _check_stages(self) -> None:
        kinds = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}
        for name, (stage, _) in self.stages.items():
            if not isinstance(stage, kinds[name]):
                raise CheckpointError(f"{self.folders[name]}: holds a {stage.name} stage, "
                                      f"expected {name}")
        codec = self.tokenizers.codec
        for name in ("coarse", "fine"):
            config = self.stages[name][0].config
            if (config.n_codebooks, config.codebook_size) != (codec.n_codebooks,
                                                              codec.codebook_size):
                raise ConfigError(
                    f"{self.folders[name]}: {name} stage wants {config.n_codebooks} codebooks of "
                    f"{config.codebook_size}; the codec at bandwidth_kbps "
                    f"{self.preset.bandwidth_kbps:g} gives {codec.n_codebooks} of "
                    f"{codec.codebook_size}"
                )

    @property
    def sample_rate(self) -> int:
        return int(self.tokenizers.codec.sample_rate)

    @property
    def semantic_hop_samples(self) -> int:
        """Samples per semantic frame (960 at 24 kHz, 3 codec frames of 320)."""
        return self.tokenizers.frames_per_semantic * self.tokenizers.codec.hop_length

    def prepare_prompt(self, audio: np.ndarray, sample_rate: int,
                       context_s: float | None = None) -> np.ndarray:
        """audio [T] at sample_rate → [T'] at the codec rate: the last context_s seconds
        (default the preset's), trimmed at the start to whole semantic frames. AudioError if
        too short or bad."""
        context_s = self.preset.context_s if context_s is None else context_s
        samples = check_samples(np.asarray(audio)[None] if np.ndim(audio) == 1 else audio,
                                "prompt")
        if samples.shape[0] != 1:
            raise AudioError(f"prompt: expected mono audio [T], got shape {np.shape(audio)}")
        samples = resample(samples, int(sample_rate), self.sample_rate)[0]
        hop = self.semantic_hop_samples
        keep = min(len(samples), round(context_s * self.sample_rate)) // hop * hop
        if keep == 0:
            raise AudioError(f"prompt: {len(samples)} samples at {self.sample_rate} Hz is shorter "
                             f"than one semantic frame ({hop} samples)")
        if keep < len(samples):
            log.info("prompt: kept its last %d samples (%.3f s: context_s %g, whole semantic "
                     "frames of %d samples)", keep, keep / self.sample_rate, context_s, hop)
        return samples[len(samples) - keep:]

    def generate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        seconds: float,
        seed: int | None = None,
        progress: Progress | None = None,
        acoustic_only: bool = False,
        watermark: bool = True,
    ) -> ContinuationResult:
        """audio [T] mono float32 at any rate → round(seconds × rate) samples of continuation
        at the codec rate (tokens are generated for whole semantic frames, the audio is cut to
        the exact length, e.g. 8 bars), seeded (same seed, same audio). acoustic_only: the
        paper's ablation — no semantic stage, the coarse stage continues acoustic codes alone.
        watermark: mark audio and lead-in (`continuo.server.watermark`; off is discouraged)."""
        if not (isinstance(seconds, (int, float)) and 0 < seconds <= 600):
            raise ConfigError(f"seconds must be in (0, 600], got {seconds!r}")
        seed = self.preset.seed if seed is None else int(seed)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        tok, timings = self.tokenizers, {}
        n_samples = max(1, round(seconds * self.sample_rate))
        n_new_sem = -(-n_samples // self.semantic_hop_samples)  # whole frames covering them
        step = _Steps(timings, progress)

        prompt = self.prepare_prompt(audio, sample_rate)
        with step("encode"):
            semantic, codes, scale = self.encode_prompt(prompt)
        seam_frame = codes.shape[2]
        semantic, codes, edge = drop_edge(semantic, codes, tok.frames_per_semantic)
        n_sem = semantic.shape[1]
        n_frames = (n_sem + edge + n_new_sem) * tok.frames_per_semantic
        with step("semantic"):
            if not acoustic_only:
                semantic = self.extend_semantic(semantic, edge + n_new_sem, gen)
        with step("coarse"):
            coarse = self.extend_coarse(None if acoustic_only else semantic, codes, n_frames, gen)
        with step("fine"):
            all_codes = self.extend_fine(coarse, codes, gen)
        with step("decode"):
            lead_in, out = self._decode(all_codes, seam_frame, scale, prompt[-1])
        if watermark:  # the lead-in ends where the continuation (sample 0) starts
            rate = self.sample_rate
            lead_in, out = embed(lead_in, rate, -len(lead_in)), embed(out[:n_samples], rate, 0)
        n_kept, n_total = codes.shape[2], all_codes.shape[2]
        return ContinuationResult(
            audio=out[:n_samples], prompt=prompt, lead_in=lead_in, sample_rate=self.sample_rate,
            semantic=semantic[0],
            codes=all_codes[0], seed=seed, timings_s=timings, watermarked=watermark,
            tokens={"prompt_semantic": n_sem, "new_semantic": semantic.shape[1] - n_sem,
                    "prompt_frames": n_kept, "new_frames": n_total - n_kept,
                    "remade_semantic": edge, "seam_frame": seam_frame},
        )

    def encode_prompt(self, prompt: np.ndarray, codec_samples: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A prepared prompt [T] (`prepare_prompt`) → semantic tokens [1, S], codes [1, K, 3S']
        and the codec's scale (None for codecs that do not normalise). codec_samples: encode
        only the prompt's last samples (whole semantic frames, S' of them); default all."""
        tok, hop = self.tokenizers, self.semantic_hop_samples
        semantic = torch.from_numpy(tok.semantic.tokenize(prompt, self.sample_rate)).long()
        semantic = semantic.to(self.device)
        n_sem = len(prompt) // hop
        n_codec = n_sem if codec_samples is None else min(n_sem, max(1, codec_samples // hop))
        x = torch.from_numpy(prompt[len(prompt) - n_codec * hop:])[None, None].to(self.device)
        encoded = tok.codec.encode(x.expand(1, tok.codec.channels, -1))
        codes = encoded.codes[:, :, : n_codec * tok.frames_per_semantic]
        return semantic[None, :n_sem], codes, encoded.scale

    def extend_semantic(self, prompt: torch.Tensor, n_new: int, gen: torch.Generator,
                        sampling: Preset | None = None) -> torch.Tensor:
        """prompt [1, S] → [1, S + n_new], window by window; sampling: the preset whose
        per-stage sampling to use (default this pipeline's)."""
        return self.extend_semantic_rows([prompt[0]], [n_new], [gen], [sampling])[0][None]

    def extend_semantic_rows(self, prompts: Sequence[torch.Tensor], n_new: Sequence[int],
                             gens: Sequence[torch.Generator],
                             samplings: Sequence[Preset | None]) -> list[torch.Tensor]:
        """Several jobs at once (one batched decode per round of windows): prompt [S_b] →
        [S_b + n_b], with the job's generator and sampling preset (None: this pipeline's)."""
        stage, model = self.stages["semantic"]
        params = [(sampling or self.preset).semantic.params() for sampling in samplings]
        window = stage.config.window_tokens
        tokens = list(prompts)
        plans = [_windows(p.shape[0], p.shape[0] + n, window)
                 for p, n in zip(prompts, n_new, strict=True)]
        for rows, pairs in window_rounds(plans):
            new = stage.generate_rows(
                model, [tokens[b][start:done] for b, (start, done, _) in pairs],
                [end - done for _, (_, done, end) in pairs], pick_rows(params, rows),
                pick_rows(gens, rows))
            for b, t in zip(rows, new, strict=True):
                tokens[b] = torch.cat([tokens[b], t])
        return tokens

    def extend_coarse(self, semantic: torch.Tensor | None, codes: torch.Tensor, n_frames: int,
                      gen: torch.Generator, sampling: Preset | None = None) -> torch.Tensor:
        """semantic [1, S + N] (None: acoustic only) and prompt codes [1, K, P] → coarse codes
        [1, Q', n_frames], n_frames = 3(S + N), window by window."""
        return self.extend_coarse_rows([None if semantic is None else semantic[0]], [codes[0]],
                                       [n_frames], [gen], [sampling])[0][None]

    def extend_coarse_rows(self, semantic: Sequence[torch.Tensor | None],
                           codes: Sequence[torch.Tensor], n_frames: Sequence[int],
                           gens: Sequence[torch.Generator],
                           samplings: Sequence[Preset | None]) -> list[torch.Tensor]:
        """Several jobs at once: semantic [S_b + N_b] (None: acoustic only) and prompt codes
        [K, P_b] → coarse codes [Q', n_frames_b]."""
        stage, model = self.stages["coarse"]
        params = [(sampling or self.preset).coarse.params() for sampling in samplings]
        q = stage.config.n_coarse
        units = [1 if s is None else stage.config.frames_per_semantic for s in semantic]
        coarse = [c[:q] for c in codes]
        plans = [_windows(c.shape[1] // u, n // u, stage.config.window_frames // u)
                 for c, n, u in zip(codes, n_frames, units, strict=True)]
        for rows, pairs in window_rounds(plans):
            new = stage.generate_rows(
                model, [None if semantic[b] is None else semantic[b][start:end]
                        for b, (start, _, end) in pairs],
                [coarse[b][:, start * units[b]: done * units[b]] for b, (start, done, _) in pairs],
                [(end - done) * units[b] for b, (_, done, end) in pairs],
                pick_rows(params, rows), pick_rows(gens, rows))
            for b, c in zip(rows, new, strict=True):
                coarse[b] = torch.cat([coarse[b], c], dim=1)
        return coarse

    def extend_fine(self, coarse: torch.Tensor, codes: torch.Tensor, gen: torch.Generator,
                    sampling: Preset | None = None) -> torch.Tensor:
        """coarse codes [1, Q', F] (prompt + new) and prompt codes [1, K, P] → all codes
        [1, K, F]: the prompt's fine codes, then the fine stage's for frames P.."""
        return self.extend_fine_rows([coarse[0]], [codes[0]], [gen], [sampling])[0][None]

    def extend_fine_rows(self, coarse: Sequence[torch.Tensor], codes: Sequence[torch.Tensor],
                         gens: Sequence[torch.Generator],
                         samplings: Sequence[Preset | None]) -> list[torch.Tensor]:
        """Several jobs at once: coarse [Q', F_b] and prompt codes [K, P_b] → all codes
        [K, F_b]."""
        stage, model = self.stages["fine"]
        q = stage.config.n_coarse
        params = [(sampling or self.preset).fine.params() for sampling in samplings]
        fine = stage.generate_rows(model, coarse, [c[q:] for c in codes], params, gens)
        return [torch.cat([co, torch.cat([c[q:], f], dim=1)])
                for co, c, f in zip(coarse, codes, fine, strict=True)]

    def _decode(self, codes: torch.Tensor, n_prompt: int, scale: torch.Tensor | None,
                last_prompt_sample: float) -> tuple[np.ndarray, np.ndarray]:
        """codes [1, K, P + N] → (lead_in [L], the samples of frames P.. (mono [N · hop])),
        decoded with up to DECODE_CONTEXT_S of prompt frames before them; see `codec_join`."""
        codec = self.tokenizers.codec
        left = min(n_prompt, math.ceil(DECODE_CONTEXT_S * codec.frame_rate))
        audio = codec.decode(EncodedAudio(codes[:, :, n_prompt - left:], scale))  # [1, C, T]
        hop = codec.hop_length
        n_new = codes.shape[2] - n_prompt
        mono = audio[0].mean(dim=0).float().cpu().numpy()
        if mono.shape[0] < (left + n_new) * hop:
            raise RuntimeError(f"codec decoded {audio.shape[-1]} samples for "
                               f"{left + n_new} frames of {hop}")
        out = mono[left * hop: (left + n_new) * hop]
        if left == 0:
            return np.zeros(0, np.float32), out
        n_lead = min(left * hop, round(CROSSFADE_S * codec.sample_rate))
        return codec_join(last_prompt_sample, mono[left * hop - n_lead: left * hop], out,
                          round(SPLICE_S * codec.sample_rate))


def drop_edge(semantic: torch.Tensor, codes: torch.Tensor, frames_per_semantic: int,
              n: int = PROMPT_EDGE_SEMANTIC) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A prompt's semantic tokens [1, S] and codes [1, K, F] without the semantic frames at its
    end that the stages should remake (n, at most S - 1, and their codec frames; F may be fewer
    than 3S frames: the codes end where the semantic tokens do) → (semantic, codes, n dropped)."""
    n = max(0, min(n, semantic.shape[1] - 1, codes.shape[2] // frames_per_semantic - 1))
    if n == 0:
        return semantic, codes, 0
    return semantic[:, :-n], codes[:, :, : codes.shape[2] - n * frames_per_semantic], n


def _windows(n_known: int, n_total: int, window: int) -> list[tuple[int, int, int]]:
    """(start, first new, end) token windows of at most `window`, each repeating three quarters
    of a window (or all known tokens) as its prompt."""
    if n_total <= window:
        return [(0, n_known, n_total)] if n_total > n_known else []
    return fine_windows(n_known, n_total, window, max(1, window * 3 // 4))


class _Steps:
    """Times each step into `timings` and reports it to `progress` when it ends."""

    def __init__(self, timings: dict[str, float], progress: Progress | None) -> None:
        self.timings, self.progress = timings, progress

    def __call__(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, steps: _Steps, name: str) -> None:
        self.steps, self.name = steps, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.steps.timings[self.name] = time.perf_counter() - self.start
        if exc[0] is None and self.steps.progress is not None:
            self.steps.progress(self.name)
