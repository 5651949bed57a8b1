"""The soak's 2-minute variant (the 30-minute one is `make soak`, tests/soak/test_soak.py): four
clients play random loop jobs, stops, parameter changes, preset switches and disconnects against
a real `continuo serve` with the tiny test model on loopback; the server must stay up, keep its
deadlines within the budget, hold RSS and open files flat after the warm-up, and record every
job completely (tests/soak/driver.py says exactly what is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401
from server_fixtures import start_server
from soak.driver import SoakConfig, Target, run_soak
from soak.report import summary_table

DURATION_S = 120.0
MAX_JOBS = 3  # the server's limit: what the tiny model's worker carries on a loaded 2-core box
CONFIG = SoakConfig(duration_s=DURATION_S, max_actions=600, warmup_s=40.0, miss_budget=0.05,
                    seed=8, chunk_beats=(0.25, 0.5, 1.0, 2.0, 4.0), gap_s=(0.3, 2.5),
                    sample_every_s=1.0)

pytestmark = pytest.mark.timeout(600)


def test_two_minutes_of_random_performers_leave_the_server_well(
    model_dir: Path, tmp_path: Path
) -> None:
    server = start_server(model_dir, tmp_path / "serve", "--max-jobs", str(MAX_JOBS),
                          "--max-prompt-s", "3")
    try:
        (tmp_path / "cool").mkdir()
        cool = write_preset(tmp_path / "cool", model_dir, extra='precision = "float32"\n',
                            temperature=0.7)
        # beside the server's own preset file: clients may name it (never by path)
        cool.rename(tmp_path / "serve" / "tiny-cool.toml")
        target = Target(server.endpoint, server.process.pid, server.out, "prompt.wav",
                        extra_presets=("tiny-cool",),
                        foreign_presets=frozenset({"piano", "realtime"}), log=server.log)
        result = run_soak(target, CONFIG)
    finally:
        code = server.stop()
    print(summary_table(result))
    assert not result.problems(), "\n".join(result.problems())
    assert code == 0, server.log_text()[-3000:]
    actions = result.actions
    assert min(actions[k] for k in ("start", "stop", "param", "preset", "disconnect")) > 0
    assert result.recordings.with_audio >= 10 and result.reconnects["same identity"] > 0
