"""`continuo eval` end to end on a tiny model folder and a folder of rendered piano (no
manifest; a corrupt and a silent file among them), on a data folder's held-out split, and the
pieces it is made of: clip choice, baselines, the report."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import progression_notes, render_piano
from continuation_fixtures import (  # noqa: F401 (fixtures)
    data_root,
    model_dir_fixture,
    write_preset,
)

from continuo.server.cli import main
from continuo.server.errors import ConfigError
from continuo.server.evaluation.continuation_eval import (
    SYSTEMS,
    Clip,
    ClipSpec,
    EvalConfig,
    Source,
    bar_samples,
    choose_clips,
    find_sources,
    random_partner,
    repeat_last_bar,
)
from continuo.server.evaluation.continuation_metrics import METRICS
from continuo.server.evaluation.continuation_report import evaluate_checks, mean_se, summarize

SR = 24000
TINY = ["--prompt-s", "1", "--seconds", "0.5"]


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four rendered progressions (~6.8 s, the last ~2 s fading to silence; FLAC, OGG, and a
    44.1 kHz stereo WAV in a subfolder), a corrupt WAV, a silent FLAC and a text file."""
    root = tmp_path_factory.mktemp("audio")
    for name, key in (("c.flac", 0), ("e.flac", 4), ("g.ogg", 7)):
        sf.write(root / name, render_piano(progression_notes(transpose=key)), SR)
    stereo = render_piano(progression_notes(transpose=-3), 44100)
    (root / "more").mkdir()
    sf.write(root / "more" / "a.wav", np.stack([stereo, 0.5 * stereo], axis=1), 44100)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    sf.write(root / "silent.flac", np.zeros(3 * SR, dtype=np.float32), SR)
    (root / "notes.txt").write_text("not audio")
    return root


def test_cli_eval_runs_every_system_and_writes_the_report(
    model_dir: Path, audio_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    preset = write_preset(tmp_path, model_dir)
    out = tmp_path / "eval"
    assert main(["eval", str(audio_folder), "--preset", str(preset), "--out", str(out),
                 "--clips", "4", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "| system | chroma cos ↑ |" in printed and str(out / "results.md") in printed
    report = json.loads((out / "results.json").read_text())
    assert len(report["clips"]) == 4 and report["sample_rate"] == SR
    assert list(report["summary"]) == list(SYSTEMS)
    names = [Path(c["path"]).name for c in report["clips"]]
    assert len(set(names)) >= 3 and set(names) <= {"c.flac", "e.flac", "g.ogg", "a.wav"}
    assert sum("broken.wav: not a readable audio file" in m for m in report["skipped"]) == 1
    assert any("silent.flac" in m and "is silent" in m for m in report["skipped"])
    for clip in report["clips"]:
        assert set(clip["systems"]) == set(SYSTEMS)
        assert all(set(figures) == set(METRICS) for figures in clip["systems"].values())
        assert clip["systems"]["true"]["chroma_cosine"] == pytest.approx(1.0)
        assert clip["systems"]["true"]["key_agreement"] == 1.0
        assert math.isfinite(clip["systems"]["continuo"]["seam_flux_ratio"])
        assert set(clip["codec"]) == {"si_sdr_db", "log_mel_l1"}
    stats = report["summary"]["continuo"]["chroma_cosine"]
    assert stats["n"] == 4 and 0 < stats["se"] < 1
    assert [c["passed"] in (True, False) for c in report["checks"]] == [True] * 3
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == 1 + len(SYSTEMS)  # header + one row per system
    assert "seam flux ratio ↓" in table and "## Checks" in table and "broken.wav" in table
    assert (out / "metrics.png").stat().st_size > 20_000
    assert len(list((out / "clips").glob("00_*_continuo.png"))) == 1
    assert len(list((out / "clips").glob("*.wav"))) == 3  # plot_clips default


def test_cli_eval_on_a_data_folder_uses_only_held_out_pieces(
    model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture  # noqa: F811
) -> None:
    preset = write_preset(tmp_path, model_dir)
    out = tmp_path / "eval"
    assert main(["eval", str(data_root), "--preset", str(preset), "--out", str(out), "--clips",
                 "5", "--systems", "true,repeat_last_bar,random_clip", *TINY]) == 0
    report = json.loads((out / "results.json").read_text())
    # one held-out piece (valid/c.flac): at most clips_per_file (2) clips from it (one, when
    # the other falls in its silent tail)
    paths = [Path(c["path"]).relative_to(data_root).as_posix() for c in report["clips"]]
    assert paths in (["valid/c.flac"], ["valid/c.flac"] * 2)
    assert len(paths) + len(report["skipped"]) == 2
    assert list(report["summary"]) == ["true", "repeat_last_bar", "random_clip"]
    assert report["summary"]["random_clip"]["chroma_cosine"]["n"] == len(paths) - 1
    assert [c["passed"] for c in report["checks"]] == [None] * 3
    assert "NOT RUN" in capsys.readouterr().out


def test_cli_eval_errors_name_the_problem(model_dir: Path, audio_folder: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    preset = str(write_preset(tmp_path, model_dir))
    args = ["--preset", preset, "--out", str(tmp_path / "o"), *TINY]
    assert main(["eval", str(audio_folder), "--systems", "continuo,magic", *args]) == 2
    assert "magic" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), *args]) == 2
    assert "no readable audio files" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="prompt_s"):
        EvalConfig(prompt_s=0)


def test_clip_choice_is_seeded_and_spreads_over_files(tmp_path: Path) -> None:
    sources = [Source(tmp_path / f"{n}.wav", f"{n}.wav", s) for n, s in
               (("long", 100.0), ("mid", 9.0), ("short", 8.5), ("tiny", 7.0))]
    config = EvalConfig(clips=3)
    specs = choose_clips(sources, config)
    assert specs == choose_clips(sources, config)
    assert specs != choose_clips(sources, EvalConfig(clips=3, seed=1))
    groups = [s.group for s in specs]
    # every long-enough file's first clip comes before any second; "tiny" (< 8 s) gives none
    assert sorted(groups[:3]) == ["long.wav", "mid.wav", "short.wav"]
    assert groups[3:] == ["long.wav"] and len(specs) == 4
    longs = sorted(s.start_s for s in specs if s.group == "long.wav")
    assert longs[0] + 8 <= 50 <= longs[1] and longs[1] + 8 <= 100  # one clip in each half
    for spec in specs:
        assert 0 <= spec.start_s <= dict((s.group, s.seconds) for s in sources)[spec.group] - 8
    # a data folder's pieces hold several files: pieces take turns, at most 2 clips per file
    pieces = [Source(tmp_path / f"p{i}.flac", "long piece", 30.0) for i in range(5)]
    specs = choose_clips([*pieces, Source(tmp_path / "s.flac", "short piece", 20.0)], config)
    assert [s.group for s in specs[:4]] in (["long piece", "short piece"] * 2,
                                            ["short piece", "long piece"] * 2)
    assert len(specs) == 12 and max(Counter(s.path for s in specs).values()) == 2


def test_repeat_last_bar_loops_four_beats_of_the_prompt() -> None:
    prompt = np.arange(5 * SR, dtype=np.float32)
    assert bar_samples(120.0, SR, len(prompt)) == 2 * SR
    assert bar_samples(30.0, SR, len(prompt)) == 4 * SR  # clamped to 60 BPM
    assert bar_samples(400.0, SR, len(prompt)) == round(1.2 * SR)  # clamped to 200 BPM
    assert bar_samples(math.nan, SR, len(prompt)) == 2 * SR  # no tempo: 120 BPM
    assert bar_samples(60.0, SR, SR) == SR  # never longer than the prompt
    out = repeat_last_bar(prompt, 5 * SR, 120.0, SR)
    bar = prompt[3 * SR:]
    np.testing.assert_array_equal(out, np.concatenate([bar, bar, bar[: SR]]))


def test_random_partner_prefers_another_piece() -> None:
    def clip(group: str) -> Clip:
        return Clip(ClipSpec(Path(f"{group}.wav"), group, 0.0), np.zeros(1), np.zeros(1))

    clips = [clip("a"), clip("a"), clip("b")]
    assert random_partner(0, clips, seed=0) == 2 and random_partner(1, clips, seed=5) == 2
    assert random_partner(2, clips, seed=0) in (0, 1)
    assert random_partner(0, [clip("a"), clip("a")], seed=0) == 1
    assert random_partner(0, [clip("a")], seed=0) is None


def test_summary_and_checks_report_honestly() -> None:
    def row(ours: float, other: float, seam: float) -> dict:
        figures = dict.fromkeys(METRICS, 1.0)
        return {"systems": {
            "continuo": {**figures, "chroma_cosine": ours, "seam_flux_ratio": seam},
            "random_clip": {**figures, "chroma_cosine": other},
            "true": {**figures, "seam_flux_ratio": 2.0},
        }}

    rows = [row(0.9, 0.5, 2.5), row(0.8, 0.6, 3.5), row(0.7, math.nan, 3.0)]
    systems = ["continuo", "random_clip", "true"]
    summary = summarize(rows, systems)
    assert summary["continuo"]["chroma_cosine"]["mean"] == pytest.approx(0.8)
    assert summary["continuo"]["chroma_cosine"]["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert summary["random_clip"]["chroma_cosine"]["n"] == 2
    checks = evaluate_checks(rows, summary)
    assert [c["passed"] for c in checks] == [True, None, True]  # 3.0 <= 1.5 x 2.0
    assert "+0.300" in checks[0]["detail"] and "2 clips" in checks[0]["detail"]
    worse = [row(0.5, 0.9, 3.5), row(0.6, 0.8, 3.5)]
    assert [c["passed"] for c in evaluate_checks(worse, summarize(worse, systems))] == [
        False, None, False]
    assert mean_se([]) == {"mean": pytest.approx(math.nan, nan_ok=True), "se":
                           pytest.approx(math.nan, nan_ok=True), "n": 0}


def test_find_sources_reports_unreadable_files(audio_folder: Path) -> None:
    sources, skipped = find_sources(audio_folder)
    assert sorted(s.path.name for s in sources) == ["a.wav", "c.flac", "e.flac", "g.ogg",
                                                    "silent.flac"]
    assert len(skipped) == 1 and "broken.wav" in skipped[0]
