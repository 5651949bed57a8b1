"""The results of `continuo eval`: means with their spread, the issue's checks, the files.

    OUT/results.json  per clip, per system, per figure; summary (mean, standard error, n);
                      codec figures; checks; skipped files (their error messages); the set-up
    OUT/results.md    the summary as a Markdown table (rows: systems; columns: figures, with
                      the direction of "better"), the codec figures, the checks, the skips
    OUT/metrics.png   a bar chart of the main figures per system, standard error bars

Spread: the standard error of the mean over clips (sample standard deviation / sqrt(n)); a
figure that is nan for a clip (silence, no onsets) leaves that clip out of its mean and n.
Checks (issue 5): `continuo` beats `random_clip` and `acoustic_only` on chroma cosine (the
paired mean difference over clips is > 0; its size in standard errors is given), and its mean
seam-flux ratio is at most SEAM_FACTOR × the true continuation's. A check whose systems were
not run is reported as not run; a missed target is reported, never raised.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from continuo.server.evaluation.continuation_metrics import METRICS

SEAM_FACTOR = 1.5
CODEC_FIGURES = ("si_sdr_db", "log_mel_l1")
# figure → (column header, direction of "better")
COLUMNS = {
    "chroma_cosine": ("chroma cos", "↑"),
    "key_agreement": ("key agreement", "↑"),
    "onset_rate_hz": ("onsets/s", ""),
    "onset_rate_ratio": ("onset rate / prompt's", "→1"),
    "tempo_bpm": ("tempo BPM", ""),
    "tempo_error": ("tempo error", "↓"),
    "mfcc_distance": ("MFCC distance", "↓"),
    "seam_flux_ratio": ("seam flux ratio", "↓"),
}
PLOTTED = ("chroma_cosine", "key_agreement", "onset_rate_ratio", "tempo_error", "mfcc_distance",
           "seam_flux_ratio")


def mean_se(values: list[float]) -> dict[str, float | int]:
    """Mean, standard error and count of the finite values (nan mean when none)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
    return {"mean": float(x.mean()) if len(x) else math.nan, "se": se, "n": len(x)}


def summarize(rows: list[dict[str, Any]],
              systems: list[str]) -> dict[str, dict[str, dict[str, float | int]]]:
    """system → figure → mean_se over the clips the system continued (n = 0: none)."""
    return {s: {m: mean_se([row["systems"][s][m] for row in rows if s in row["systems"]])
                for m in METRICS} for s in systems}


def _beats(rows: list[dict[str, Any]], metric: str, ours: str, other: str) -> dict[str, Any]:
    name = f"{ours} beats {other} on {metric}"
    pairs = [(r["systems"][ours][metric], r["systems"][other][metric]) for r in rows
             if ours in r["systems"] and other in r["systems"]]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    diff = mean_se([a - b for a, b in pairs])
    if not diff["n"]:
        return {"name": name, "passed": None, "detail": f"{ours} or {other} not run"}
    a, b = mean_se([p[0] for p in pairs]), mean_se([p[1] for p in pairs])
    margin = diff["mean"] / diff["se"] if diff["se"] > 0 else math.nan
    return {"name": name, "passed": bool(diff["mean"] > 0),
            "detail": f"{a['mean']:.3f} vs {b['mean']:.3f}; paired difference "
                      f"{diff['mean']:+.3f} ± {diff['se']:.3f} ({margin:+.1f} standard errors, "
                      f"{diff['n']} clips)"}


def _seam(summary: dict[str, dict[str, dict[str, Any]]], ours: str = "continuo") -> dict[str, Any]:
    name = f"{ours} seam flux ratio <= {SEAM_FACTOR:g} x true's"
    stats = [summary.get(s, {}).get("seam_flux_ratio", {"n": 0}) for s in (ours, "true")]
    if not all(stat["n"] for stat in stats):
        return {"name": name, "passed": None, "detail": f"{ours} or true not run (or silent)"}
    a, b = (stat["mean"] for stat in stats)
    return {"name": name, "passed": bool(a <= SEAM_FACTOR * b),
            "detail": f"{a:.2f} vs {SEAM_FACTOR:g} x {b:.2f} = {SEAM_FACTOR * b:.2f}"}


def evaluate_checks(rows: list[dict[str, Any]],
                    summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The issue's targets: pass (True), fail (False) or not run (None), with the figures."""
    return [_beats(rows, "chroma_cosine", "continuo", "random_clip"),
            _beats(rows, "chroma_cosine", "continuo", "acoustic_only"),
            _seam(summary)]


def build_report(rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """results.json's content: `info` (the set-up, with config.systems), clips, summary, codec,
    checks."""
    summary = summarize(rows, list(info["config"]["systems"]))
    codec = {k: mean_se([r["codec"][k] for r in rows]) for k in CODEC_FIGURES}
    return {"version": 1, **info, "clips": rows, "summary": summary, "codec": codec,
            "checks": evaluate_checks(rows, summary)}


def _cell(stat: dict[str, Any]) -> str:
    """'mean ± se' to 3 and 2 significant digits ('–' without values)."""
    if not stat["n"]:
        return "–"
    se = stat["se"]
    spread = "" if not math.isfinite(se) else " ± 0" if se < 1e-9 else f" ± {se:.2g}"
    return f"{stat['mean']:.3g}{spread}"


def markdown(report: dict[str, Any]) -> str:
    """results.md: the table, the codec figures, the checks, the skipped files."""
    c, n = report["config"], len(report["clips"])
    lines = [
        "# Continuation evaluation", "",
        f"{n} clip{'s' * (n != 1)} of {c['prompt_s']:g} s prompt + {c['continuation_s']:g} s "
        f"continuation from `{report['folder']}`; preset `{report['preset']}`, seed {c['seed']}, "
        f"{report['sample_rate']} Hz. Mean ± standard error over clips. Harmonic figures compare "
        "with the true continuation, rhythm and timbre with the prompt; ↑ higher is better, "
        "↓ lower, →1 closest to 1.", "",
        "| system | " + " | ".join(f"{h} {d}".strip() for h, d in COLUMNS.values()) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for system, stats in report["summary"].items():
        lines.append(f"| {system} | " + " | ".join(_cell(stats[m]) for m in COLUMNS) + " |")
    codec = report["codec"]
    lines += ["", f"Codec reconstruction of the true continuations: SI-SDR "
              f"{_cell(codec['si_sdr_db'])} dB ↑, log-mel L1 {_cell(codec['log_mel_l1'])} ↓.",
              "", "## Checks (issue 5 targets)", ""]
    for check in report["checks"]:
        mark = {True: "PASS", False: "FAIL", None: "NOT RUN"}[check["passed"]]
        lines.append(f"- **{mark}** {check['name']}: {check['detail']}")
    if report["skipped"]:
        lines += ["", f"## Skipped ({len(report['skipped'])})", ""]
        lines += [f"- {message}" for message in report["skipped"]]
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """nan/inf → None, recursively (JSON has no nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def plot_bars(summary: dict[str, dict[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """One panel per main figure: a bar per system, standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(summary)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, metric in zip(axes.flat, PLOTTED, strict=True):
        means = [summary[s][metric]["mean"] for s in systems]
        errors = [np.nan_to_num(summary[s][metric]["se"]) for s in systems]
        ax.bar(range(len(systems)), means, yerr=errors, capsize=4,
               color=[f"C{i}" for i in range(len(systems))])
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right")
        header, direction = COLUMNS[metric]
        ax.set_title(f"{header} {direction}".strip())
        if metric == "onset_rate_ratio":
            ax.axhline(1.0, color="k", ls=":", lw=1)
        if metric == "seam_flux_ratio" and "true" in summary:
            ax.axhline(SEAM_FACTOR * summary["true"][metric]["mean"], color="k", ls="--", lw=1,
                       label=f"{SEAM_FACTOR:g} x true")
            ax.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, report: dict[str, Any]) -> tuple[str, dict[str, Path]]:
    """Write results.json, results.md and metrics.png to `out`; the table and the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "table": out / "results.md",
             "plot": out / "metrics.png"}
    paths["json"].write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n",
                             encoding="utf-8")
    table = markdown(report)
    paths["table"].write_text(table, encoding="utf-8")
    c = report["config"]
    plot_bars(report["summary"], paths["plot"],
              f"{len(report['clips'])} clips of {c['prompt_s']:g} + {c['continuation_s']:g} s "
              f"from {report['folder']} (mean ± standard error)")
    return table, paths
