"""The `continuo` command: data, train, bench (and later serve, continue, eval, keys).

Each subcommand is one small function that declares its arguments and one that runs it; heavy
modules (torch, librosa, music21) are imported inside the runner so `continuo --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Before torch is imported (lazily, by the commands): OpenMP's default busy-waiting made a
# training step 100x slower on 2 shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from continuo.server import __version__
from continuo.server.errors import ContinuoError
from continuo.server.paths import DEFAULT_MODEL_DIR

log = logging.getLogger("continuo")


# --- continuo data ------------------------------------------------------------------------------


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_cmd", required=True
    )

    p = data.add_parser("piano", help="render the music21 corpus to piano audio (24 kHz mono)")
    p.add_argument("out", type=Path, help="output folder (audio files + manifest.json)")
    p.add_argument("--limit", type=int, help="render at most N pieces (a fixed, varied sample)")
    p.add_argument("--composers", help="comma-separated corpus folders, e.g. bach,mozart")
    p.add_argument("--exclude", type=Path, action="append", default=[], metavar="FILE",
                   help="skip the pieces of a data folder's manifest.json or of a pieces list "
                        "like models/piano/pieces.txt (repeatable): an evaluation set of pieces "
                        "a model never saw")
    p.add_argument("--soundfont", type=Path, default=Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"))
    p.add_argument("--timeout-s", type=float, default=600.0, help="give up on a piece after")
    _add_data_common(p)
    p.set_defaults(func=_run_data_piano)

    p = data.add_parser("folder", help="segment and resample a folder of your own audio")
    p.add_argument("src", type=Path, help="folder of WAV/FLAC/OGG files (searched recursively)")
    p.add_argument("out", type=Path, help="output folder (audio files + manifest.json)")
    _add_data_common(p)
    p.set_defaults(func=_run_data_folder)


def _add_data_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample-rate", type=int, default=24000, help="Hz (default 24000)")
    p.add_argument("--segment-seconds", type=float, default=30.0, help="longest segment")
    p.add_argument("--jobs", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--max-hours", type=float, help="stop starting pieces after this much audio")
    p.add_argument("--valid-fraction", type=float, default=0.05,
                   help="share of pieces held out for validation (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.05,
                   help="share of pieces held out for testing (default 0.05)")


def _data_common(args: argparse.Namespace) -> dict:
    """render_corpus / prepare_folder keyword arguments shared by both data commands."""
    import os

    from continuo.server.data.segments import SegmentConfig

    config = SegmentConfig(sample_rate=args.sample_rate, segment_seconds=args.segment_seconds,
                           valid_fraction=args.valid_fraction, test_fraction=args.test_fraction)
    return {"config": config, "jobs": args.jobs or os.cpu_count() or 1,
            "max_hours": args.max_hours}


def _run_data_piano(args: argparse.Namespace) -> None:
    from continuo.server.data.piano import excluded_pieces, render_corpus

    composers = args.composers.split(",") if args.composers else None
    exclude = {piece for path in args.exclude for piece in excluded_pieces(path)}
    render_corpus(
        args.out, composers=composers, exclude=exclude, limit=args.limit,
        soundfont=args.soundfont,
        timeout_s=args.timeout_s, **_data_common(args),
    )


def _run_data_folder(args: argparse.Namespace) -> None:
    from continuo.server.data.folder import prepare_folder

    prepare_folder(args.src, args.out, **_data_common(args))


# --- continuo train -----------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train the codec, the semantic tokenizer, the stages")
    tsub = train.add_subparsers(dest="train_cmd", required=True)

    p = tsub.add_parser("codec", help="train the small codec on a data folder (resumes)")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: checkpoint/ (resumed from), best/ (the codec), tb/ (logs)")
    p.add_argument("--decoder", choices=("istft", "seanet"), default="istft",
                   help="decoder of a new run (default istft, the measured winner)")
    p.add_argument("--frame-rate", type=int, choices=(75, 50), default=75,
                   help="codec frame rate of a new run, Hz (default 75)")
    p.add_argument("--n-filters", type=int, default=16, help="SEANet width of a new run")
    p.add_argument("--steps", type=int, help="total steps over all sittings (default: no limit)")
    p.add_argument("--minutes", type=float, help="stop this sitting after this many minutes")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--crop-seconds", type=float, default=1.0, help="crop length (default 1.0)")
    p.add_argument("--lr", type=float,
                   help="AdamW learning rate (default 3e-4 for a new run; on resume the run's "
                        "own unless given, e.g. lower for a last sitting)")
    p.add_argument("--warmup-steps", type=int, default=300,
                   help="steps with the quantiser bypassed before its k-means init (default 300)")
    p.add_argument("--discriminator", action="store_true",
                   help="add the multi-scale STFT discriminator (adversarial + feature losses)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument("--eval-clips", type=int, default=20, help="held-out clips (10 s each)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--wave-weight", type=float, default=0.1,
                   help="weight of the L1 waveform loss (default 0.1, EnCodec's; 1.0 gained "
                        "~1 dB SI-SDR in a fine-tune here)")
    p.add_argument("--init-from", type=Path,
                   help="codec folder a new run starts from (e.g. models/piano/codec): "
                        "weights and step count, fresh optimiser")
    p.add_argument("--codebooks", type=int, nargs="+",
                   help="codebook counts a step draws from (default: the codec's, 2 4 8 at "
                        "75 Hz); e.g. 8 for a last sitting at the 6 kbps the stages use")
    p.set_defaults(func=_run_train_codec)

    p = tsub.add_parser("semantic", help="fit the semantic tokenizer's k-means on a data folder")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.add_argument("--out", type=Path, required=True, help="tokenizer folder to write")
    p.add_argument("--clusters", type=int, default=512, help="k-means clusters (default 512)")
    p.add_argument("--extractor", choices=("music", "hubert"), default="music",
                   help="built-in music features (default) or a local HuBERT/MERT-style model")
    p.add_argument("--hubert-dir", type=Path, help="HuBERT folder (save_pretrained), local only")
    p.add_argument("--layer", type=int, default=7, help="HuBERT hidden layer (default 7)")
    p.add_argument("--pool", type=int, default=2, help="HuBERT frames averaged (2: 50 → 25 Hz)")
    p.add_argument("--max-hours", type=float, help="use at most this much train audio")
    p.add_argument("--seed", type=int, default=0, help="item order and k-means seed")
    p.set_defaults(func=_run_train_semantic)

    p = tsub.add_parser("stage", help="train one AudioLM stage on a data folder (resumes)")
    p.add_argument("stage", choices=("semantic", "coarse", "fine"), help="which stage")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: checkpoint/ (resumed from), best/ (the stage), tb/ (logs)")
    _add_train_lm_common(p, "RUN/../token_cache")
    p.set_defaults(func=_run_train_stage)

    p = tsub.add_parser("all", help="train the semantic, coarse and fine stages in turn")
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.add_argument("--out", type=Path, required=True,
                   help="runs folder: one run folder per stage (semantic/, coarse/, fine/)")
    _add_train_lm_common(p, "RUNS/token_cache")
    p.set_defaults(func=_run_train_all)


def _add_train_lm_common(p: argparse.ArgumentParser, cache_default: str) -> None:
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                   help="model folder with codec/ and semantic/ (default: the embedded one)")
    p.add_argument("--cache-dir", type=Path,
                   help=f"token cache, computed once and shared (default {cache_default})")
    p.add_argument("--size", choices=("tiny", "small", "paper"), default="small",
                   help="decoder size of a new run (default small)")
    p.add_argument("--layout", choices=("flat", "delay"), default="delay",
                   help="acoustic token layout (default delay, the realtime one)")
    p.add_argument("--window-s", type=float,
                   help="training window, seconds (default: the stage's, 30/10/3 s)")
    p.add_argument("--bandwidth", type=float, default=6.0, help="codec kbps (default 6)")
    p.add_argument("--init-from", type=Path,
                   help="model folder (e.g. models/piano) whose <stage>_lm/ a new run starts "
                        "from: its weights, a fresh optimiser and schedule")
    p.add_argument("--steps", type=int, help="total steps over all sittings (default: no limit)")
    p.add_argument("--minutes", type=float, help="stop this sitting after this many minutes")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step and rank")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast: auto (CUDA only), bf16 (also CPU), off")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--seed", type=int, default=0, help="initial weights and window order")


def _run_train_codec(args: argparse.Namespace) -> None:
    from continuo.server.tokenizers.small_codec import SmallCodecConfig
    from continuo.server.training.codec_losses import CodecLossWeights
    from continuo.server.training.codec_trainer import CodecTrainConfig, train_codec

    model = SmallCodecConfig.for_frame_rate(args.frame_rate, decoder=args.decoder,
                                            n_filters=args.n_filters)
    config = CodecTrainConfig(
        steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
        crop_seconds=args.crop_seconds, learning_rate=args.lr, warmup_steps=args.warmup_steps,
        discriminator=args.discriminator, eval_every=args.eval_every,
        eval_clips=args.eval_clips, device=args.device, init_from=args.init_from,
        loss_weights=CodecLossWeights(wave=args.wave_weight),
        train_codebooks=tuple(args.codebooks) if args.codebooks else None,
    )
    summary = train_codec(args.data, args.out, model, config)
    print(f"stopped by {summary.stopped_by} at step {summary.step} (this sitting from "
          f"{summary.start_step}); checkpoint {args.out / 'checkpoint'}")
    if summary.last_eval:
        for label, metrics in summary.last_eval.items():
            print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if summary.best_metric is not None:
        print(f"best codec (SI-SDR {summary.best_metric:.2f} dB): {args.out / 'best'}")


def _run_train_semantic(args: argparse.Namespace) -> None:
    from continuo.server.errors import ConfigError
    from continuo.server.tokenizers.features import HubertFeatures, MusicFeatures
    from continuo.server.training.semantic import format_report, train_semantic

    if args.extractor == "hubert":
        if args.hubert_dir is None:
            raise ConfigError("--extractor hubert needs --hubert-dir (a local model folder)")
        extractor = HubertFeatures(args.hubert_dir, layer=args.layer, pool=args.pool)
    else:
        extractor = MusicFeatures()
    report = train_semantic(
        args.data, args.out, extractor, n_clusters=args.clusters, max_hours=args.max_hours,
        seed=args.seed,
    )
    print(format_report(report))


def _train_lm(args: argparse.Namespace, names: list[str], runs: dict[str, Path],
              cache_dir: Path) -> None:
    from continuo.server.training.lm_trainer import LMTrainConfig
    from continuo.server.training.stage_training import StageOptions, train_stages

    options = StageOptions(size=args.size, layout=args.layout, window_s=args.window_s,
                           bandwidth_kbps=args.bandwidth, init_from=args.init_from)
    config = LMTrainConfig(
        steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
        learning_rate=args.lr, warmup_steps=args.warmup_steps, eval_every=args.eval_every,
        amp=args.amp, device=args.device, seed=args.seed,
    )
    summaries = train_stages(names, args.data, args.model_dir, runs, args.cache_dir or cache_dir,
                             options, config)
    if int(os.environ.get("RANK", 0)) != 0:
        return  # under torchrun, rank 0 reports
    for name, s in summaries.items():
        valid = "-" if s.valid_loss is None else f"{s.valid_loss:.4f}"
        print(f"{name}: stopped by {s.stopped_by} at step {s.step} (this sitting from "
              f"{s.start_step}), valid loss {valid}; best: {runs[name] / 'best'}")


def _run_train_stage(args: argparse.Namespace) -> None:
    _train_lm(args, [args.stage], {args.stage: args.out}, args.out.parent / "token_cache")


def _run_train_all(args: argparse.Namespace) -> None:
    names = ["semantic", "coarse", "fine"]
    _train_lm(args, names, {n: args.out / n for n in names}, args.out / "token_cache")


# --- continuo codec / demo ---------------------------------------------------------------------


def _add_codec(sub: argparse._SubParsersAction) -> None:
    csub = sub.add_parser("codec", help="use or evaluate a codec").add_subparsers(
        dest="codec_cmd", required=True
    )
    spec_help = "encodec_24khz, encodec_48khz or a small-codec folder"

    p = csub.add_parser("eval", help="SI-SDR, log-mel and chroma agreement on held-out clips")
    p.add_argument("codec", help=spec_help)
    p.add_argument("data", type=Path, help="data folder with manifest.json")
    p.add_argument("--split", default="valid", help="manifest split (default valid)")
    p.add_argument("--clips", type=int, default=20,
                   help="clips, evenly spread through the split as in training (default 20)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each clip")
    p.add_argument("--weights-dir", type=Path, help="folder holding EnCodec's .th weights")
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    p.set_defaults(func=_run_codec_eval)

    p = csub.add_parser("roundtrip", help="encode and decode an audio file, write WAV + plot")
    p.add_argument("input", type=Path, help="WAV/FLAC/OGG file")
    p.add_argument("-o", "--out", type=Path, required=True, help="WAV to write")
    p.add_argument("--codec", default=str(DEFAULT_MODEL_DIR / "codec"),
                   help=spec_help + " (default: the embedded codec)")
    p.add_argument("--bandwidth", type=float, default=6.0, help="kbps (default 6)")
    p.add_argument("--weights-dir", type=Path, help="folder holding EnCodec's .th weights")
    p.set_defaults(func=_run_codec_roundtrip)

    p = csub.add_parser("export", help="copy a trained small codec for shipping (e.g. float16)")
    p.add_argument("src", type=Path, help="small-codec folder, e.g. runs/codec/best")
    p.add_argument("dst", type=Path, help="folder to write, e.g. models/piano/codec")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="storage type of the weights (default float16)")
    p.set_defaults(func=_run_codec_export)

    p = sub.add_parser("stage", help="ship a trained AudioLM stage").add_subparsers(
        dest="stage_cmd", required=True).add_parser(
        "export", help="copy a trained stage into a model folder (e.g. float16)")
    p.add_argument("src", type=Path, help="stage folder, e.g. runs/stages/coarse/best")
    p.add_argument("dst", type=Path, help="folder to write, e.g. models/piano/coarse_lm")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="storage type of the weights (default float16)")
    p.set_defaults(func=_run_stage_export)

    p = sub.add_parser("demo", help="continue the bundled clip by 8 bars with the embedded model")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    p.add_argument("--preset", default="piano", help="preset name in presets/ or a .toml path")
    p.add_argument("--model-dir", type=Path,
                   help="model folder with a clip.flac + clip.json (default: the preset's)")
    p.add_argument("--bars", type=int, default=8, help="bars to continue (default 8)")
    p.add_argument("--seed", type=int, help="sampling seed (default: the preset's)")
    p.set_defaults(func=_run_demo)


def _run_codec_eval(args: argparse.Namespace) -> None:
    from continuo.server.data.manifest import load_manifest
    from continuo.server.evaluation.codec_metrics import evaluate_codec, format_codec_table
    from continuo.server.tokenizers.loading import load_codec
    from continuo.server.training.codec_trainer import spread

    codec = load_codec(args.codec, weights_dir=args.weights_dir)
    items = spread(load_manifest(args.data).split(args.split), args.clips)  # as training does
    if not items:
        raise ContinuoError(f"{args.data}: no items in split {args.split!r}")
    results = evaluate_codec(codec, items, seconds=args.seconds)
    table = format_codec_table(
        results, f"Codec {args.codec} on {len(items)} {args.split} clips of {args.data}, "
        f"first {args.seconds:g} s each"
    )
    print(table)
    if args.out:
        args.out.write_text(table)


def _run_codec_roundtrip(args: argparse.Namespace) -> None:
    from continuo.server.audio import load_audio
    from continuo.server.codec_roundtrip import roundtrip, write_roundtrip
    from continuo.server.tokenizers.loading import load_codec

    codec = load_codec(args.codec, bandwidth_kbps=args.bandwidth, weights_dir=args.weights_dir)
    audio = load_audio(args.input, sample_rate=codec.sample_rate)
    info = {"input": str(args.input), "codec": str(args.codec), "bandwidth_kbps": args.bandwidth}
    sidecar = write_roundtrip(roundtrip(codec, audio), args.out, args.out.with_suffix(".png"), info)
    print(json.dumps(sidecar["metrics"]))
    print(f"wrote {args.out}, {args.out.with_suffix('.json')}, {args.out.with_suffix('.png')}")


def _run_codec_export(args: argparse.Namespace) -> None:
    from continuo.server.tokenizers.small_codec import EMA_SUM_SUFFIX, KIND, SmallCodec

    _export(args, KIND, SmallCodec.load, (EMA_SUM_SUFFIX,))


def _run_stage_export(args: argparse.Namespace) -> None:
    from continuo.server.model.loading import KIND, load_stage

    _export(args, KIND, load_stage)


def _export(args: argparse.Namespace, kind: str, load: Callable[[Path], object],
            drop_suffixes: tuple[str, ...] = ()) -> None:
    """Copy the model folder args.src to args.dst as args.dtype (without the training-only
    tensors named by drop_suffixes), then load it back with `load`, the real loader."""
    import torch

    from continuo.server.training.checkpoint import export_model_folder, load_model_folder

    export_model_folder(args.src, args.dst, kind, getattr(torch, args.dtype), drop_suffixes)
    load(args.dst)
    size_mb = sum(f.stat().st_size for f in args.dst.iterdir()) / 1e6
    step = load_model_folder(args.dst, kind).extra.get("step")
    print(f"wrote {args.dst} ({args.dtype}, step {step}, {size_mb:.1f} MB)")


def _run_demo(args: argparse.Namespace) -> None:
    from continuo.server.continuation import STEPS
    from continuo.server.demo import run_demo
    from continuo.server.presets import load_preset

    preset = load_preset(args.preset)
    if args.model_dir is not None:
        preset = preset.model_copy(update={"model_dir": args.model_dir.resolve()})
    with _steps_bar(len(STEPS), "demo") as progress:
        paths = run_demo(args.out, preset, args.bars, args.seed, progress)
    sidecar = json.loads(paths["json"].read_text())
    tempo = sidecar["tempo"]
    print(f"Continuo demo: {sidecar['prompt']['path']} ({tempo['clip'].get('source', 'clip')}) "
          f"continued by {tempo['bars']} bars of {tempo['meter']} at {tempo['bpm']:g} BPM "
          f"({sidecar['continuation_samples'] / sidecar['sample_rate']:.2f} s) in "
          f"{sum(sidecar['timings_s'].values()):.1f} s, preset {sidecar['preset']['name']}, "
          f"seed {sidecar['seed']}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")


@contextlib.contextmanager
def _steps_bar(total: int, desc: str) -> Iterator[Callable[[str], None]]:
    """A tqdm bar over pipeline steps; yields the progress callback."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="step") as bar:
        def progress(step: str) -> None:
            bar.set_postfix_str(step)
            bar.update()

        yield progress


# --- continuo continue --------------------------------------------------------------------------


def _add_continue(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("continue", help="continue a prompt clip offline (WAV, JSON, PNG)")
    p.add_argument("prompt", type=Path, help="prompt audio (WAV/FLAC/OGG, any rate, downmixed)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="continuation length (default 8)")
    length.add_argument("--bars", type=int, help="continuation length in bars (needs --bpm)")
    p.add_argument("--bpm", type=float, help="the prompt's tempo, quarter notes per minute")
    p.add_argument("--meter", default="4/4", help="the prompt's meter with --bars (default 4/4)")
    p.add_argument("--preset", default="piano", help="preset name in presets/ or a .toml path")
    p.add_argument("--seed", type=int, help="sampling seed (default: the preset's)")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="OUT.wav (continuation only); also OUT.full.wav, OUT.json, OUT.png")
    p.add_argument("--no-watermark", action="store_true",
                   help="leave the responsible-use watermark out (discouraged)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N")
    p.set_defaults(func=_run_continue)


def _run_continue(args: argparse.Namespace) -> None:
    from continuo.server.audio import load_audio
    from continuo.server.continuation import STEPS, Continuation
    from continuo.server.continuation_files import write_continuation
    from continuo.server.musical_time import Meter, bar_to_sample

    if args.bars is not None and args.bpm is None:
        raise ContinuoError("--bars needs the prompt's tempo: add --bpm")
    prompt = load_audio(args.prompt)  # AudioError naming the file when missing or bad
    pipeline = Continuation(args.preset, device=args.device)  # ConfigError: no CUDA, ...
    seconds, extra = 8.0 if args.seconds is None else args.seconds, None
    if args.bars is not None:
        meter, rate = Meter.parse(args.meter), pipeline.sample_rate
        seconds = bar_to_sample(args.bars, args.bpm, meter, rate) / rate  # ConfigError if absurd
        extra = {"tempo": {"bars": args.bars, "bpm": args.bpm, "meter": str(meter)}}
    with _steps_bar(len(STEPS), "continue") as progress:
        result = pipeline.generate(prompt.samples[0], prompt.sample_rate, seconds,
                                   seed=args.seed, progress=progress,
                                   watermark=not args.no_watermark)
    paths = write_continuation(pipeline, result, args.prompt, seconds, args.out, extra)
    print(f"continued {args.prompt} by {len(result.audio) / result.sample_rate:.2f} s "
          f"(preset {pipeline.preset.name}, seed {result.seed}): "
          + ", ".join(f"{kind} {path}" for kind, path in paths.items()))


# --- continuo eval ------------------------------------------------------------------------------


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score continuations against baselines on held-out clips")
    p.add_argument("data", type=Path, help="data folder (held-out splits of manifest.json) or "
                   "any folder of audio files (searched recursively)")
    p.add_argument("--preset", default="piano", help="preset name in presets/ or a .toml path")
    p.add_argument("--out", type=Path, default=Path("outputs/eval"),
                   help="folder for results.json, results.md, metrics.png, clips/ "
                        "(default outputs/eval)")
    p.add_argument("--clips", type=int, default=16, help="number of clips (default 16)")
    p.add_argument("--prompt-s", type=float, default=4.0, help="prompt seconds (default 4)")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="continuation seconds (default 4)")
    p.add_argument("--seed", type=int, default=0, help="clip choice and sampling seed")
    p.add_argument("--systems",
                   default="continuo,acoustic_only,true,true_codec,repeat_last_bar,random_clip",
                   help="comma-separated systems (default: all six)")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> None:
    from continuo.server.evaluation.continuation_eval import EvalConfig, run_eval

    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    config = EvalConfig(prompt_s=args.prompt_s, continuation_s=args.seconds, clips=args.clips,
                        seed=args.seed, systems=systems)
    result = run_eval(args.data, args.preset, args.out, config)
    print(result.table)
    print("wrote " + ", ".join(f"{kind} {path}" for kind, path in result.paths.items()))


# --- continuo serve -----------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="keep a model warm and stream continuations over ZeroMQ")
    p.add_argument("--preset", default="realtime", help="preset name in presets/ or a .toml "
                   "path (default realtime); jobs may name other presets of the same model")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="ZeroMQ endpoint (default tcp://127.0.0.1:5555; beyond loopback needs "
                        "--keys)")
    p.add_argument("--keys", type=Path, help="CURVE key folder made by `continuo keys`")
    p.add_argument("--clip-root", type=Path, default=Path("."),
                   help="clip paths in requests must lie under this folder (default: here)")
    p.add_argument("--out", type=Path, default=Path("outputs/jobs"),
                   help="every job is recorded here as WAV + JSON (default outputs/jobs)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the small model's steps are too small to "
                        "share; 2 threads were 1.8x slower on 2 cores)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N; on "
                        "cuda a preset's precision \"mixed\" runs as bf16")
    p.add_argument("--max-jobs", type=int, default=4, help="concurrent jobs (default 4)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="jobs generated together in one batched step (default 16; 1: in turn)")
    p.add_argument("--max-bars", type=int, default=10_000, help="bars per job (default 10000)")
    p.add_argument("--max-prompt-s", type=float, default=60.0,
                   help="prompt seconds (default 60)")
    p.add_argument("--ahead-s", type=float, default=1.0,
                   help="how far generation may run ahead of playback (default 1 s)")
    p.add_argument("--no-watermark", action="store_true",
                   help="leave the responsible-use watermark out of every chunk (discouraged: "
                        "`continuo detect` then cannot tell the audio came from Continuo)")
    p.add_argument("--watermark-strength", type=float,
                   help="the mark's level relative to the music (default 0.0056: 45 dB below; "
                        "noise-like music needs more to be found in short clips)")
    p.add_argument("--max-requests-per-s", type=float, default=200.0,
                   help="messages per second per client, heartbeats included (default 200); "
                        "over it: dropped, error rate_limited")
    p.add_argument("--max-request-burst", type=int, default=400,
                   help="messages a client may send at once before --max-requests-per-s "
                        "applies (default 400)")
    p.add_argument("--max-upload-bytes-per-s", type=int, default=8 * 1024 * 1024,
                   help="PCM prompt bytes per second per client (default 8 MiB)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
    from continuo.server.transport.limits import RateLimits
    from continuo.server.transport.security import is_loopback

    if args.keys is None and not is_loopback(args.bind):  # before torch and the model load
        raise ContinuoError(f"binding {args.bind} needs CURVE keys: run `continuo keys DIR` "
                            "and pass --keys DIR")
    rate = RateLimits(args.max_requests_per_s, args.max_request_burst,
                      args.max_upload_bytes_per_s)
    from continuo.server.engine.engine import EngineConfig
    from continuo.server.serve import ServeOptions, serve
    from continuo.server.transport.server import ServerConfig

    options = ServeOptions(args.preset, args.threads, args.device)  # ConfigError: no CUDA, ...
    engine = EngineConfig(out_dir=args.out, clip_root=args.clip_root, max_jobs=args.max_jobs,
                          max_bars=args.max_bars, max_prompt_s=args.max_prompt_s,
                          ahead_s=args.ahead_s, watermark=_watermark(args),
                          max_batch=args.max_batch)
    serve(options, engine, ServerConfig(args.bind, args.keys, rate=rate))


def _watermark(args: argparse.Namespace) -> object:
    """serve's WatermarkConfig, or None for --no-watermark."""
    from dataclasses import replace

    from continuo.server.watermark import WATERMARK

    if args.no_watermark:
        log.warning("--no-watermark: the chunks carry no watermark (discouraged)")
        return None
    if args.watermark_strength is None:
        return WATERMARK
    return replace(WATERMARK, strength=args.watermark_strength)  # ConfigError when out of range


# --- continuo detect ----------------------------------------------------------------------------


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="say whether audio files carry Continuo's watermark",
                       description="For each file: generated yes/no, the confidence that it "
                       "carries Continuo's watermark (1 - p, p the chance of so high a score "
                       "from unmarked audio; yes needs p <= 1e-6) and the score.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="WAV/FLAC/OGG files")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> None:
    from continuo.server.audio import load_audio
    from continuo.server.watermark import detect

    failed = 0
    for path in args.files:
        try:
            audio = load_audio(path)
        except ContinuoError as err:
            failed += 1
            print(f"continuo: error: {err}", file=sys.stderr)
            continue
        found = detect(audio.samples, audio.sample_rate)
        if args.json:
            print(json.dumps({"file": str(path), **found.as_dict()}))
        else:
            print(f"{path}: generated: {'yes' if found.is_generated else 'no '}  confidence "
                  f"{found.confidence:.4%}  score {found.score:.2f} (threshold "
                  f"{found.threshold:.2f}, p {found.p_value:.2g}, {found.seconds:.1f} s)")
    if failed:
        raise ContinuoError(f"{failed} of {len(args.files)} files could not be read")


# --- continuo keys ------------------------------------------------------------------------------


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make ZeroMQ CURVE keys for a server bound beyond loopback")
    p.add_argument("dir", type=Path, help="folder to write server.key, server.key_secret, "
                   "client.key, client.key_secret into (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=_run_keys)


def _run_keys(args: argparse.Namespace) -> None:
    from continuo.server.transport.security import AUTHORIZED_DIR, make_keys

    paths = make_keys(args.dir, force=args.force)
    print(f"wrote CURVE keys to {args.dir}:")
    for path in paths.values():
        print(f"  {path}")
    print(f"serve with:  continuo serve --bind tcp://0.0.0.0:5555 --keys {args.dir}\n"
          f"give each client {paths['server.key']} and {paths['client.key_secret']} "
          "(keep the secret files private).\n"
          f"Several clients: put each client's public .key file in {args.dir / AUTHORIZED_DIR}/ "
          "(once that folder exists, only the keys in it are accepted).")


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continuo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"continuo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_train(sub)
    _add_codec(sub)
    _add_continue(sub)
    _add_eval(sub)
    _add_serve(sub)
    _add_keys(sub)
    _add_detect(sub)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a scheduler) and SIGINT (Ctrl-C; ignored by default in background jobs)
    # both end a command the way Ctrl-C does: training saves its checkpoint, data its manifest.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except ContinuoError as err:
        print(f"continuo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("continuo: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, previous in handlers.items():  # main() may run inside another program
            signal.signal(sig, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
