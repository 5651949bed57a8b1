"""`LinkClock` (Ableton Link through aalink): its beat keeps time at its tempo against
perf_counter, a tempo change bends the grid without a jump, two peers share one tempo, and
without aalink it says what to install. The Link sessions run in a subprocess in a network
namespace of its own where the machine allows it (see link_probe.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from continuo.bridge.link import LinkClock
from continuo.server.errors import ConfigError

PROBE = Path(__file__).with_name("link_probe.py")
pytestmark = pytest.mark.timeout(120)
needs_aalink = pytest.mark.skipif(importlib.util.find_spec("aalink") is None,
                                  reason="Ableton Link is the optional extra continuo[link]")


@cache
def isolation() -> list[str]:
    """`unshare -rn` if this machine lets us make a network namespace, else nothing."""
    if shutil.which("unshare") and subprocess.run(
            ["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def probe(mode: str) -> dict:
    prefix = isolation()
    command = [*prefix, sys.executable, str(PROBE), mode, *(["--isolated"] if prefix else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["isolated"] = bool(prefix)
    return report


@pytest.fixture(scope="module")
def clock_report() -> dict:
    report = probe("clock")
    if report["peers"] and not report["isolated"]:
        pytest.skip(f"{report['peers']} other Link peer(s) on this network joined the session "
                    f"and may set its tempo (no network namespace to run the test alone in)")
    return report


@needs_aalink
def test_beat_advances_at_the_tempo_against_perf_counter(clock_report: dict) -> None:
    r = clock_report
    assert r["bpm"] == 100
    drift_s = r["beats"] * 60 / 100 - r["elapsed_s"]
    assert r["elapsed_s"] >= 2.0
    assert abs(drift_s) < 1e-3, f"{r['beats']} beats in {r['elapsed_s']:.4f} s at 100 BPM"
    worst = r["mapping_error_s"][-1]
    assert worst < 1e-3, f"beat_at was {worst * 1e3:.3f} ms off Link's own beat"


@needs_aalink
def test_set_bpm_changes_the_tempo_with_beats_continuous(clock_report: dict) -> None:
    r = clock_report
    assert r["bpm_after"] == 150
    assert abs(r["rate_after_bpm"] - 150) < 0.15
    # The old and new lines meet within the call: no jump beyond what the tempo difference
    # makes over the time set_bpm took.
    allowed = r["change_window_s"] * 50 / 60 + 1e-5
    assert abs(r["jump_beats"]) <= allowed, f"the beat jumped by {r['jump_beats']:.6f}"


@needs_aalink
def test_a_tempo_set_by_one_peer_reaches_the_other() -> None:
    r = probe("peers")
    if r["peers"] != [1, 1]:
        if r.get("multicast"):  # this machine cannot multicast: discovery is impossible
            pytest.skip(f"Link peers cannot find each other here: {r['multicast']}")
        pytest.fail(f"two Link peers did not find each other in {r['found_s']:.1f} s "
                    f"(peers {r['peers']}), although multicast works here")
    assert abs(r["seen_bpm"] - 111.5) < 0.01
    assert r["seen_after_s"] < 1.0
    # Peers share the bar phase: beats differ by whole bars (quantum 4) at 111.5 BPM.
    offset = r["beat_difference"] % 4
    assert min(offset, 4 - offset) < 1e-3 * 111.5 / 60, f"beat difference {r['beat_difference']}"


def test_without_aalink_it_says_what_to_install() -> None:
    code = ("import sys; sys.modules['aalink'] = None\n"
            "from continuo.bridge.link import LinkClock, LinkUnavailableError\n"
            "from continuo.server.errors import ContinuoError\n"
            "try:\n    LinkClock(120)\nexcept LinkUnavailableError as err:\n"
            "    assert isinstance(err, ContinuoError); print(err)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'continuo[link]'" in result.stdout


@pytest.mark.parametrize("kwargs", [{"bpm": 5}, {"bpm": float("nan")}, {"bpm": True},
                                    {"quantum": 0}, {"quantum": float("inf")}])
def test_bad_tempo_or_quantum_is_a_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=r"tempo|quantum"):
        LinkClock(**kwargs)
