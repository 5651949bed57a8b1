"""`make fuzz`: run each atheris target for a bounded time, then the hypothesis property tests,
and write what ran (executions, crashes, examples) into docs/reliability.md's Fuzzing section.

    .venv/bin/python fuzz/run.py --seconds 120          # what `make fuzz FUZZ_S=120` runs

Each target keeps its corpus in fuzz/corpus/NAME/ (grows run after run) and writes a crashing
input to fuzz/artifacts/NAME/ (crash-*, timeout-* over 10 s, oom-* over 2 GB). libFuzzer stops a
target at its first crash; the run goes on with the next target and exits 1 at the end. Turn
each crash into a regression test (tests/test_fuzz_properties.py) with the input inlined.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"protocol": "server: msgpack frames → parse_request (ProtocolError only)",
           "osc": "bridge: UDP datagram → inbox parse → parse_message (OscError only)"}
PROPERTY_TESTS = ["tests/test_fuzz_properties.py", "tests/test_protocol.py",
                  "tests/test_bridge_fuzz.py::test_parse_message_takes_anything"]
BEGIN, END = "<!-- fuzz:begin (written by `make fuzz`, fuzz/run.py) -->", "<!-- fuzz:end -->"
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: \d+ corp: (\d+)/", re.M)
_TEST = re.compile(r"^\S+::(\w+):$")
_PHASE = re.compile(r"- (\d+) passing, (\d+) failing")


@dataclass(frozen=True)
class TargetRun:
    name: str
    executions: int
    seconds: int
    coverage: int
    corpus: int
    crashes: list[Path]


def _osc_seeds(folder: Path) -> None:
    """Real OSC datagrams, one per address, and a bundle, as the OSC target's first corpus."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    examples = {"generate": ["prompt.wav", 120.0, 4, "piano"], "stop": [],
                "param": ["temperature", 0.8], "preset": ["realtime"], "tempo": [93.5],
                "loop": [1], "learn": ["top_p"], "capture": [2, "in.wav"], "status": []}
    bundle = OscBundleBuilder(IMMEDIATELY)
    for name, args in examples.items():
        builder = OscMessageBuilder("/continuo/" + name)
        for arg in args:
            builder.add_arg(arg)
        message = builder.build()
        (folder / f"seed-{name}").write_bytes(message.dgram)
        bundle.add_content(message)
    (folder / "seed-bundle").write_bytes(bundle.build().dgram)


def run_target(name: str, seconds: int, logs: Path) -> TargetRun:
    corpus, artifacts = ROOT / "fuzz" / "corpus" / name, ROOT / "fuzz" / "artifacts" / name
    for folder in (corpus, artifacts, logs):
        folder.mkdir(parents=True, exist_ok=True)
    if name == "osc" and not any(corpus.iterdir()):
        _osc_seeds(corpus)
    before = set(artifacts.iterdir())
    argv = [sys.executable, str(ROOT / "fuzz" / f"fuzz_{name}.py"), str(corpus),
            f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    print(f"fuzzing {name} for {seconds} s: {' '.join(argv[1:])}", flush=True)
    log = logs / f"{name}.log"
    with log.open("w") as sink:
        subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                       timeout=seconds + 300, check=False)
    text = log.read_text(errors="replace")
    stats = _STATS.findall(text)
    done = _DONE.search(text)
    executions = int(done[1]) if done else int(stats[-1][0]) if stats else 0
    crashes = sorted(set(artifacts.iterdir()) - before)
    result = TargetRun(name, executions, int(done[2]) if done else seconds,
                       int(stats[-1][1]) if stats else 0, int(stats[-1][2]) if stats else 0,
                       crashes)
    print(f"  {result.executions} executions, coverage {result.coverage}, corpus "
          f"{result.corpus}, {len(crashes)} crash(es) {[str(c) for c in crashes]} (log {log})",
          flush=True)
    return result


def run_properties() -> list[tuple[str, int, int]]:
    """The hypothesis tests with statistics: [(test, passing examples, failing)]."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--hypothesis-show-statistics", *PROPERTY_TESTS]
    print("property tests: pytest " + " ".join(argv[5:]), flush=True)
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=900,
                         check=False)
    counts: dict[str, list[int]] = {}
    test = None
    for line in out.stdout.splitlines():
        if (name := _TEST.match(line)) is not None:
            test = name[1]
            counts.setdefault(test, [0, 0])
        elif test is not None and (phase := _PHASE.search(line)) is not None:
            counts[test][0] += int(phase[1])  # every phase: reuse, generate, shrink
            counts[test][1] += int(phase[2])
    found = [(t, p, f) for t, (p, f) in counts.items()]
    if out.returncode != 0 or not found:
        print(out.stdout[-4000:], out.stderr[-2000:])
    return found if out.returncode == 0 else [*found, ("(pytest failed)", 0, 1)]


def report(runs: list[TargetRun], properties: list[tuple[str, int, int]], seconds: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [BEGIN, f"Last run: {now}, `make fuzz FUZZ_S={seconds}` (atheris "
             f"{version('atheris')}, hypothesis {version('hypothesis')}).", "",
             "| atheris target | input | executions | seconds | coverage | corpus | crashes |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        crashes = ", ".join(c.relative_to(ROOT).as_posix() for c in r.crashes) or "0"
        lines.append(f"| `fuzz/fuzz_{r.name}.py` | {TARGETS[r.name]} | {r.executions:,} | "
                     f"{r.seconds} | {r.coverage} | {r.corpus} | {crashes} |")
    lines += ["", "| hypothesis property test | examples | failing |", "|---|---|---|"]
    lines += [f"| `{test}` | {passing:,} | {failing} |" for test, passing, failing in properties]
    total = sum(r.executions for r in runs) + sum(p for _, p, _ in properties)
    lines += ["", f"Inputs fuzzed in this run: {total:,}.", END]
    return "\n".join(lines)


def write_section(doc: Path, block: str) -> None:
    """Replace the marked block in doc (a `## Fuzzing` section is added when there is none)."""
    text = doc.read_text() if doc.exists() else "# Reliability\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Fuzzing\n\n" + block + "\n"
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120, help="per target (default 120)")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    runs = [run_target(name, args.seconds, ROOT / "fuzz" / "logs") for name in args.targets]
    block = report(runs, run_properties(), args.seconds)
    print(block)
    if not args.no_doc:
        write_section(args.doc, block)
        print(f"wrote the Fuzzing table into {args.doc}")
    failed = any(r.crashes or not r.executions for r in runs) or "(pytest failed)" in block
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
