"""Data sets: manifest, segmentation and splits, the piano renderer, a user's folder, the CLI."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import needs_fluidsynth, tone

from continuo.server.cli import main
from continuo.server.data.folder import prepare_folder
from continuo.server.data.manifest import (
    Failure,
    ManifestItem,
    load_manifest,
    make_manifest,
    write_manifest,
)
from continuo.server.data.progress import PieceResult, ProgressLog, folder_lock
from continuo.server.data.segments import (
    SegmentConfig,
    assign_split,
    segment_bounds,
    trim_silence,
    unique_stems,
)
from continuo.server.errors import ConfigError, DataError

# --- manifest -----------------------------------------------------------------------------------


def test_manifest_round_trip(tmp_path: Path) -> None:
    items = [
        ManifestItem(tmp_path / "valid/b_000.flac", "b", "valid", 3.5),
        ManifestItem(tmp_path / "train/a_000.flac", "a", "train", 30.0),
        ManifestItem(tmp_path / "train/a_001.flac", "a", "train", 6.0),
    ]
    manifest = make_manifest(tmp_path, 24000, "folder", items, [Failure("c", "corrupt")],
                             extra={"note": "kept"})
    write_manifest(manifest)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["items"][0] == {"path": "train/a_000.flac", "piece": "a", "split": "train",
                               "seconds": 30.0}
    assert raw["summary"] == {
        "pieces": {"train": 1, "valid": 1, "test": 0},
        "hours": {"train": 0.01, "valid": 0.001, "test": 0.0},
        "failures": 1,
    }
    assert raw["note"] == "kept"
    loaded = load_manifest(tmp_path)
    assert loaded == manifest == load_manifest(tmp_path / "manifest.json")
    assert [i.path.name for i in loaded.split("train")] == ["a_000.flac", "a_001.flac"]
    assert all(i.path.is_absolute() for i in loaded.items)
    assert loaded.split("test") == []


def test_manifest_missing_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.json: no manifest"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not a readable JSON manifest"),
        ("[1, 2]", "expected a JSON object"),
        ('{"version": 99}', "unsupported version"),
        ('{"version": 1, "sample_rate": 24000, "source": "folder"}', "invalid manifest"),
        ('{"version": 1, "sample_rate": 24000, "source": "folder", "items": '
         '[{"path": "train/x.flac", "piece": "x", "split": "dev", "seconds": 1}]}', "split"),
        ('{"version": 1, "sample_rate": 24000, "source": "folder", "items": '
         '[{"path": "../x.flac", "piece": "x", "split": "train", "seconds": 1}]}', "inside"),
        ('{"version": 1, "sample_rate": 24000, "source": "folder", "items": ['
         '{"path": "train/x_000.flac", "piece": "x", "split": "train", "seconds": 1},'
         '{"path": "test/x_001.flac", "piece": "x", "split": "test", "seconds": 1}]}',
         "spans splits"),
    ],
)
def test_manifest_malformed_is_a_data_error_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(err.value)


# --- segmentation and splits --------------------------------------------------------------------


def test_splits_are_deterministic_and_near_90_5_5() -> None:
    # pinned: a SHA-256 of the id, the same on every machine and Python version
    assert [assign_split(p) for p in ("p0", "p7", "p1", "bach/bwv66.6")] == [
        "test", "valid", "train", "train"
    ]
    counts = Counter(assign_split(f"piece-{i}") for i in range(4000))
    assert 0.87 < counts["train"] / 4000 < 0.93
    assert 0.035 < counts["valid"] / 4000 < 0.065
    assert 0.035 < counts["test"] / 4000 < 0.065


def test_segment_bounds_cut_and_drop_short_tail() -> None:
    assert segment_bounds(70, 30, 5) == [(0, 30), (30, 60), (60, 70)]
    assert segment_bounds(63, 30, 5) == [(0, 30), (30, 60)]
    assert segment_bounds(30, 30, 5) == [(0, 30)]
    assert segment_bounds(3, 30, 5) == []


def test_trim_silence_is_sample_exact() -> None:
    x = np.zeros(100, np.float32)
    x[20] = 0.5
    x[60] = -0.01
    x[80] = 1e-5  # 94 dB below the peak: silence
    assert np.array_equal(trim_silence(x, -60.0), x[20:61])
    assert trim_silence(np.zeros(10, np.float32)).size == 0


def test_unique_stems_disambiguate_collisions() -> None:
    stems = unique_stems(["a/b c", "a_b/c", "bach/bwv66.6"])
    assert stems["bach/bwv66.6"] == "bach_bwv66.6"
    assert len(set(stems.values())) == 3
    assert all(stems[p].startswith("a_b_c-") for p in ("a/b c", "a_b/c"))


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 100}, {"segment_seconds": 0.0}, {"min_segment_seconds": 40.0},
     {"valid_fraction": 0.6, "test_fraction": 0.5}, {"silence_db": 3.0}],
)
def test_segment_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SegmentConfig(**kwargs)


# --- progress log (resume) ----------------------------------------------------------------------


def test_progress_log_survives_a_torn_line_and_refuses_other_settings(tmp_path: Path) -> None:
    log = ProgressLog(tmp_path, {"sample_rate": 24000})
    item = ManifestItem(tmp_path / "train/a_000.flac", "a", "train", 2.0)
    log.add(PieceResult("a", (item,)))
    log.add(PieceResult("b", error="ParseError: bad"))  # failures are done too: not retried
    with (tmp_path / "progress.jsonl").open("a") as f:
        f.write('{"piece": "c", "ite')  # killed mid-write
    again = ProgressLog(tmp_path, {"sample_rate": 24000})
    failed = PieceResult("b", error="ParseError: bad")
    assert again.done == {"a": PieceResult("a", (item,)), "b": failed}
    again.add(PieceResult("c", error="x"))
    assert set(ProgressLog(tmp_path, {"sample_rate": 24000}).done) == {"a", "b", "c"}
    with pytest.raises(DataError, match="other settings"):
        ProgressLog(tmp_path, {"sample_rate": 16000})


def test_one_run_at_a_time_per_folder(tmp_path: Path) -> None:
    with folder_lock(tmp_path), pytest.raises(DataError, match="another"), folder_lock(tmp_path):
        pass
    with folder_lock(tmp_path):  # released
        pass


# --- a user's folder ----------------------------------------------------------------------------


def _stereo_tone(path: Path, seconds: float, freq_hz: float, rate: int = 44100) -> None:
    left = tone(freq_hz, seconds, rate)
    sf.write(path, np.stack([left, 0.5 * left], axis=1), rate)


def test_folder_resamples_downmixes_segments_and_counts_bad_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "takes").mkdir(parents=True)
    _stereo_tone(src / "takes" / "long.wav", 12.5, 440.0)
    _stereo_tone(src / "short.flac", 3.0, 330.0)
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    (src / "notes.txt").write_text("not audio, ignored")
    config = SegmentConfig(segment_seconds=5.0)

    manifest = prepare_folder(src, tmp_path / "out", config=config, show_progress=False)

    assert manifest == load_manifest(tmp_path / "out")
    assert [f.piece for f in manifest.failures] == ["broken.wav"]
    assert "broken.wav" in manifest.failures[0].error
    by_piece: dict[str, list[ManifestItem]] = {}
    for item in manifest.items:
        by_piece.setdefault(item.piece, []).append(item)
    assert sorted(by_piece) == ["short.flac", "takes/long.wav"]
    lengths = [sf.info(i.path).frames for i in by_piece["takes/long.wav"]]
    assert lengths[:2] == [120000, 120000]  # 5 s at 24 kHz, exactly
    assert abs(lengths[2] - 2.5 * 24000) < 0.01 * 24000  # the tail, less the trimmed fades
    for item in manifest.items:
        info = sf.info(item.path)
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
        assert item.split == assign_split(item.piece)
        assert item.seconds == pytest.approx(info.frames / 24000, abs=1e-4)
    x, _ = sf.read(by_piece["short.flac"][0].path, dtype="float32")
    assert 0.2 < np.abs(x).max() < 0.3  # mean of 0.3 and 0.15 peaks, after soxr
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * 24000 / len(x) == pytest.approx(330.0, abs=1.0)


def test_folder_in_parallel_equals_serial(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i, freq in enumerate((220.0, 261.6, 329.6)):
        _stereo_tone(src / f"t{i}.wav", 2.0, freq)
    config = SegmentConfig(segment_seconds=1.0, min_segment_seconds=0.5)
    one = prepare_folder(src, tmp_path / "one", config=config, show_progress=False)
    two = prepare_folder(src, tmp_path / "two", config=config, jobs=2, show_progress=False)
    rel = lambda m: [(i.path.relative_to(m.root), i.split, i.seconds) for i in m.items]  # noqa: E731
    assert rel(one) == rel(two) and len(rel(one)) == 6
    for a, b in zip(one.items, two.items, strict=True):
        assert np.array_equal(sf.read(a.path)[0], sf.read(b.path)[0])


def test_cli_data_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _stereo_tone(src / "a.wav", 2.8, 440.0, rate=48000)
    out = tmp_path / "out"
    argv = ["data", "folder", str(src), str(out), "--jobs", "1", "--sample-rate", "16000",
            "--segment-seconds", "1.5"]
    assert main(argv) == 0
    manifest = load_manifest(out)
    assert manifest.sample_rate == 16000
    frames = [sf.info(i.path).frames for i in manifest.items]
    assert frames[0] == 24000 and 20700 < frames[1] <= 20800  # 1.5 s, then the rest
    assert main(["data", "folder", str(tmp_path / "nowhere"), str(out)]) == 2


# --- the music21 corpus on piano ----------------------------------------------------------------


def _corpus(*pieces: str) -> dict[str, Path]:
    from continuo.server.data.piano import corpus_pieces

    found = corpus_pieces()
    return {piece: found[piece] for piece in pieces}


@pytest.mark.needs_fluidsynth
def test_piano_renders_skips_bad_pieces_and_resumes(tmp_path: Path) -> None:
    from continuo.server.data.piano import render_corpus

    needs_fluidsynth()
    out = tmp_path / "piano"
    config = SegmentConfig(segment_seconds=10.0)
    corrupt = tmp_path / "broken" / "corrupt.mxl"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 this is no zip")
    first = {**_corpus("bach/bwv66.6"), "broken/corrupt": corrupt}

    manifest = render_corpus(out, pieces=first, config=config, show_progress=False)

    assert manifest == load_manifest(out)
    assert manifest.source == "music21" and manifest.sample_rate == 24000
    assert [f.piece for f in manifest.failures] == ["broken/corrupt"]
    assert {i.piece for i in manifest.items} == {"bach/bwv66.6"}
    assert 15.0 < manifest.seconds() < 30.0  # 36 quarter notes at 120 BPM, plus the release
    assert [i.seconds for i in manifest.items][:2] == [10.0, 10.0]
    for item in manifest.items:
        x, rate = sf.read(item.path, dtype="float32", always_2d=True)
        assert rate == 24000 and x.shape[1] == 1
        assert np.sqrt(np.mean(x**2)) > 0.01  # audible piano, not silence
        assert item.path.parent.name == item.split == assign_split(item.piece)
    stamps = {i.path: os.stat(i.path).st_mtime_ns for i in manifest.items}

    more = {**first, **_corpus("ryansMammoth/7thRegimentReel")}
    resumed = render_corpus(out, pieces=more, config=config, show_progress=False)

    assert resumed.extra["last_run"]["pieces"] == 1  # only the new piece was rendered
    assert {i.piece for i in resumed.items} == {"bach/bwv66.6", "ryansMammoth/7thRegimentReel"}
    assert {i.path: os.stat(i.path).st_mtime_ns for i in resumed.items
            if i.piece == "bach/bwv66.6"} == stamps
    assert len(resumed.failures) == 1

    # An evaluation set of pieces another data set never saw: --exclude its manifest.
    unseen = tmp_path / "unseen"
    argv = ["data", "piano", str(unseen), "--exclude", str(out / "manifest.json"),
            "--composers", "bach", "--limit", "1", "--valid-fraction", "0",
            "--test-fraction", "1", "--segment-seconds", "10"]
    assert main(argv) == 0
    fresh = load_manifest(unseen)
    assert fresh.items and {i.piece for i in fresh.items}.isdisjoint({"bach/bwv66.6"})
    assert {i.split for i in fresh.items} == {"test"}
    only = render_corpus(tmp_path / "only", pieces=more, exclude={"bach/bwv66.6", "broken/corrupt"},
                         config=config, show_progress=False)
    assert {i.piece for i in only.items} == {"ryansMammoth/7thRegimentReel"}


@pytest.mark.needs_fluidsynth
def test_piano_abc_collection_is_one_piece_capped_in_length(tmp_path: Path) -> None:
    from continuo.server.data.piano import render_corpus

    needs_fluidsynth()
    piece = "oneills1850/0487-0500"  # 14 tunes; music21 10.5 cannot write tune 3 to MIDI
    manifest = render_corpus(tmp_path, pieces=_corpus(piece), max_piece_s=90.0,
                             show_progress=False)
    assert manifest.failures == ()
    assert {i.piece for i in manifest.items} == {piece}
    assert 90.0 <= manifest.seconds() < 90.0 + 60.0  # stopped after the tune that passed 90 s
    names = [i.path.name for i in manifest.items]
    assert names == [f"oneills1850_0487-0500_{n:03d}.flac" for n in range(len(names))]
    assert manifest.extra["last_run"]["skipped_scores"] == 1


@pytest.mark.needs_fluidsynth
def test_piano_plays_through_repeats_music21_cannot_expand(tmp_path: Path) -> None:
    from continuo.server.data.piano import render_corpus

    needs_fluidsynth()
    manifest = render_corpus(tmp_path, pieces=_corpus("chopin/mazurka06-2"), show_progress=False)
    assert manifest.failures == ()  # music21: "badly formed repeats", written once through
    assert 50.0 < manifest.seconds() < 90.0


@pytest.mark.needs_fluidsynth
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # 1st alarm
def test_piano_timeout_is_a_counted_failure(tmp_path: Path) -> None:
    from continuo.server.data.piano import render_corpus

    needs_fluidsynth()
    manifest = render_corpus(tmp_path, pieces=_corpus("bach/bwv66.6"), timeout_s=0.001,
                             show_progress=False)
    assert manifest.items == ()
    assert "TimeoutError" in manifest.failures[0].error


def test_piano_without_soundfont_names_the_package(tmp_path: Path) -> None:
    from continuo.server.data.piano import check_renderer

    with pytest.raises(DataError, match=r"apt-get install fluid(synth|-soundfont-gm)"):
        check_renderer(tmp_path / "missing.sf2")
    argv = ["data", "piano", str(tmp_path / "out"), "--soundfont", str(tmp_path / "no.sf2")]
    assert main(argv) == 2


def test_corpus_pieces_are_unique_varied_and_stable() -> None:
    from continuo.server.data.piano import FORMATS, corpus_pieces

    pieces = corpus_pieces()
    assert len(pieces) > 2000
    assert all(p.suffix in FORMATS for p in pieces.values())
    assert corpus_pieces() == pieces  # same order every time
    first = list(pieces)[:100]
    assert len({p.split("/")[0] for p in first}) >= 20  # turns between corpus folders
    assert Counter(assign_split(p) for p in first)["train"] < 100  # held-out pieces among them
    bach = corpus_pieces(["bach"])
    assert bach and all(p.startswith("bach/") for p in bach)


def test_excluded_pieces_come_from_a_pieces_list_or_a_manifest(tmp_path: Path) -> None:
    from continuo.server.data.piano import excluded_pieces

    listing = tmp_path / "pieces.txt"
    listing.write_text("# comment\ntrain bach/bwv66.6\n"
                       "test trecento/PMFC_12_10a-Credo PMFC12.10a\n")
    assert excluded_pieces(listing) == {"bach/bwv66.6", "trecento/PMFC_12_10a-Credo PMFC12.10a"}
    listing.write_text("bach/bwv66.6\n")
    with pytest.raises(DataError, match="split piece-id"):
        excluded_pieces(listing)
    with pytest.raises(DataError, match=r"missing\.txt"):
        excluded_pieces(tmp_path / "missing.txt")
