"""The soak's figures as a Markdown table, and its section of docs/reliability.md.

`write_section` replaces the part of the document from its heading to the next `## ` heading
(or appends it, or creates the document), leaving every other section as it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from soak.driver import MIB, SoakResult

KINDS = ("start", "stop", "param", "preset", "disconnect", "status")


def summary_rows(result: SoakResult) -> list[tuple[str, str]]:
    """(figure, value) rows of one soak, every value from its result."""
    c, rec, rss, fds = result.config, result.recordings, result.rss_kib, result.fixed_fds
    actions = ", ".join(f"{k} {result.actions[k]}" for k in KINDS)
    refused = ", ".join(f"{k} {n}" for k, n in sorted(result.refused.items())) or "none"
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(rec.reasons.items()))
    wall = max(result.wall_s, 1e-9)
    return [
        ("duration", f"{result.wall_s:.0f} s (bound {c.duration_s:g} s or {c.max_actions} "
                     f"actions; warm-up {c.warmup_s:g} s)"),
        ("clients", f"{c.clients}, one thread and random.Random each (seed {c.seed})"),
        ("actions", f"{sum(result.actions.values())}: {actions}"),
        ("refused, as the server should", refused),
        ("disconnects", f"{result.reconnects['same identity']} back with the same identity "
                        f"(jobs kept), {result.reconnects['new identity']} as a new client "
                        "(jobs orphaned)"),
        ("jobs", f"{result.jobs} loop jobs; ended: {reasons}"),
        ("jobs running at once", f"mean {result.jobs_running[0]:.2f}, max "
                                 f"{result.jobs_running[1]}"),
        ("audio recorded", f"{rec.audio_s:.0f} s in {rec.chunks} chunks "
                           f"({result.chunks_heard} heard by the clients)"),
        ("deadline misses", f"{rec.misses} of {rec.gradable_chunks} chunks "
                            f"({rec.miss_fraction:.2%}; budget {c.miss_budget:.0%}); "
                            f"worst {rec.worst_late_s * 1000:.0f} ms late"),
        ("RSS", f"at rest before {result.rss_idle_kib[0] / MIB:.1f} MiB; playing: "
                f"{rss.reference / MIB:.1f} after warm-up, {rss.end / MIB:.1f} at the end, max "
                f"deviation {rss.max_deviation / MIB:.1f} MiB "
                f"({rss.max_deviation / rss.reference:.1%}; tolerance "
                f"{rss.tolerance / MIB:.1f} MiB); at rest after "
                f"{result.rss_idle_kib[1] / MIB:.1f}"),
        ("open fds", f"at rest before {result.fds_idle[0]}, after {result.fds_idle[1]}"
                     f"{_new_fds(result.new_fds)}; playing, "
                     f"less one per job and per connection: {fds.reference:g} after warm-up, "
                     f"{fds.end:g} at the end, max deviation {fds.max_deviation:g} (tolerance "
                     f"{fds.tolerance:g})"),
        ("status answered", f"{len(result.samples)} times (every "
                            f"{result.wall_s / max(len(result.samples), 1):.1f} s), slowest "
                            f"{result.status_s_max * 1000:.0f} ms; at the end: "
                            f"{'yes' if result.final_status is not None else 'NO'}"),
        ("CPU", f"server {result.server_cpu_s / wall:.2f} cores, its threads waiting for a "
                f"CPU {result.server_wait_s / wall:.2f}; other processes "
                f"{result.other_cpu_s / wall:.2f} cores"),
        ("recordings checked", f"{rec.recordings} ({rec.with_audio} with audio): "
                               f"{len(rec.problems)} problems"),
        ("result", "passed" if not result.problems()
         else f"FAILED: {len(result.problems())} problems"),
    ]


def _new_fds(new: dict[str, int]) -> str:
    return f" (new: {', '.join(f'{n} {k}' for k, n in sorted(new.items()))})" if new else ""


def summary_table(result: SoakResult) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(result)]
    return "\n".join(lines)


def write_samples(result: SoakResult, path: Path) -> None:
    """The monitor's samples as JSON (t_s, rss_kib, fds, jobs, connections, status_s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(s) for s in result.samples]
    path.write_text(json.dumps(rows) + "\n", encoding="utf-8")


def write_section(doc: Path, heading: str, body: str) -> None:
    """Put `heading` + `body` into `doc` in place of that section (see the module doc)."""
    section = f"{heading}\n\n{body.strip()}\n"
    if not doc.exists():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(f"# Reliability\n\n{section}", encoding="utf-8")
        return
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text, encoding="utf-8")
