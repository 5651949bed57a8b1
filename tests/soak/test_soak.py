"""The soak (`make soak`, 30 minutes; $CONTINUO_SOAK_S seconds): four clients play random loop
jobs, stops, parameter changes, preset switches and disconnects against a real `continuo serve`
with the embedded model on loopback, as tests/soak/driver.py describes, and the figures go into
the "## Soak" section of docs/reliability.md. Never part of `make test` (pyproject ignores
tests/soak; its 2-minute variant with the tiny model is tests/test_soak_short.py).

The server runs as a user starts it (preset realtime: models/piano, mixed precision, 1 torch
thread, --ahead-s 1) with --max-jobs 2: the server benchmark (README, "The realtime server")
measured that one worker carries two realtime streams on this 2-core machine, not four.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bench.server_bench_tools import serve_process
from soak.driver import SoakConfig, SoakResult, Target, run_soak
from soak.report import summary_table, write_samples, write_section

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
DURATION_S = float(os.environ.get("CONTINUO_SOAK_S", "1800"))
SEED = int(os.environ.get("CONTINUO_SOAK_SEED", "0"))
MAX_JOBS = int(os.environ.get("CONTINUO_SOAK_MAX_JOBS", "1"))
MISS_BUDGET = 0.05
CHUNK_BEATS, TEMPO_BPM = (0.5, 1.0, 2.0), (80.0, 170.0)
CONFIG = SoakConfig(duration_s=DURATION_S, max_actions=max(100, round(3 * DURATION_S)),
                    warmup_s=min(300.0, DURATION_S / 4), miss_budget=MISS_BUDGET, seed=SEED,
                    chunk_beats=CHUNK_BEATS, tempo_bpm=TEMPO_BPM, gap_s=(0.5, 3.5),
                    sample_every_s=min(5.0, DURATION_S / 60))

ABOUT = f"""\
`make soak` ([tests/soak/](../tests/soak/)) plays a real `continuo serve` on loopback (preset
`realtime`: the embedded models/piano, mixed precision, 1 torch thread, `--ahead-s 1`,
`--max-jobs {MAX_JOBS}`) from four clients, each on its own thread with its own seeded
`random.Random`, for `$CONTINUO_SOAK_S` seconds (default 1800) or 3 actions per second of it,
whichever comes first. Every 0.5–3.5 s each client starts a loop job (the bundled clip; random
track, tempo {TEMPO_BPM[0]:g}–{TEMPO_BPM[1]:g} BPM, meter, chunk length
({", ".join(f"{b:g}" for b in CHUNK_BEATS)} beats), parameters, seed, sometimes a preset; a
job on a busy track preempts it), stops one, changes parameters anywhere in their ranges,
switches a job's preset, asks `status`, or drops its connection mid-stream and comes back, half
the time with its identity (its jobs follow it) and half the time as a new client (its jobs
must end `client_gone`).
The 2-minute variant in `make test` (tests/test_soak_short.py) does the same with the tiny test
model, 3 jobs at once and chunks of 1/4–4 beats.

Asserted: the server never dies, logs no traceback, and answers `status` at the end with no job
left; no client sees an error besides refusals the server owes (`limit` at the job limit,
`unknown_preset`), a `done` it did not cause, or a chunk off its job's chunk plan; deadline
misses (the server's count per job: chunks sent after their due time) at most
{MISS_BUDGET:.0%} of the chunks that can be late (all but each job's first); RSS within ±5 %
or ±20 MiB and open fds (less one per running job and per client connection) within ±4 of their
values after the warm-up (the first quarter, at most 5 minutes), and at rest after the soak;
every job's recording ends with the reason its client expects, holds as many samples as its
chunks by the chunk plan, and reads back with soundfile: finite, not silent.

Why these bounds. A job may run at most `--ahead-s` ahead of its due time, so a chunk is late
when the worker, once free for it, needs longer than that to make it. A worker that cannot carry
its jobs is late on nearly every chunk, so a budget of {MISS_BUDGET:.0%} tells that apart while
allowing the few late chunks of a stall on this shared 2-core machine (other people's tests
run beside the soak; the table gives the CPU they took and how long the server waited for a
CPU). One job at a time: the server benchmark carries two on a quiet machine, but under the
shared load one job ran at 0.6–0.75× realtime and two were late on most chunks. Chunks up to 2
beats at 80 BPM or faster (at most 1.5 s): a whole chunk is generated once its job may start it,
1 s before it is due, so at 0.6–0.75× realtime a chunk much longer than 1.3 s is late by design
(4-beat chunks at slow tempos were; reported to the engine's owner).
"""


def _command() -> str:
    prefix = " ".join(f"{k}={os.environ[k]}" for k in ("CONTINUO_SOAK_S", "CONTINUO_SOAK_SEED")
                      if k in os.environ)
    return f"{prefix} make soak".strip()


def _write_doc(result: SoakResult) -> None:
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    body = f"{ABOUT}\nRun of {when}, `{_command()}`:\n\n{summary_table(result)}\n"
    write_section(DOC, "## Soak", body)


@pytest.mark.timeout(int(DURATION_S) + 900)
def test_soak(tmp_path: Path) -> None:
    with serve_process(tmp_path, ROOT / "models" / "piano", 1, "--max-jobs", str(MAX_JOBS)) as s:
        result = run_soak(Target(s.endpoint, s.pid, tmp_path / "jobs", "clip.flac", log=s.log),
                          CONFIG)
    print(summary_table(result))
    write_samples(result, ROOT / "outputs" / "soak" / "samples.json")
    _write_doc(result)
    assert not result.problems(), "\n".join(result.problems())
