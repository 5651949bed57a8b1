"""The responsible-use watermark (server/watermark.py) on rendered piano: found where embedded,
absent where not, seamless chunk by chunk, robust to gain, 44.1 kHz, mixing and Vorbis, 45 dB
below the music; the engine's chunks and the offline continuation carry it, `continuo detect`
says so, and --no-watermark leaves it out."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import C_MAJOR_PROGRESSION, progression_notes, render_piano, tone
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401
from server_fixtures import SR, collect, joined, start_server

from continuo.server.audio import resample
from continuo.server.cli import main
from continuo.server.errors import ConfigError
from continuo.server.evaluation.codec_metrics import log_mel_l1
from continuo.server.watermark import WATERMARK, WatermarkConfig, detect, embed, p_value

pytestmark = pytest.mark.timeout(300)
P = WATERMARK.period_samples
SNR_FLOOR_DB = 40.0  # the mark is at least this far below the music


@pytest.fixture(scope="module")
def piano() -> np.ndarray:
    """8 s of rendered piano chords."""
    return render_piano(progression_notes(C_MAJOR_PROGRESSION * 2))[: 8 * SR]


@pytest.fixture(scope="module")
def other() -> np.ndarray:
    """Other music to mix in: the progression a fifth up, in another rhythm."""
    notes = progression_notes(C_MAJOR_PROGRESSION * 3, beats_per_chord=1.5, transpose=7)
    return render_piano(notes, bpm=100)[: 8 * SR]


def test_the_mark_is_found_with_its_offset_and_absent_music_is_not_flagged(
        piano: np.ndarray) -> None:
    marked = embed(piano, SR, start_sample=123_456)
    found = detect(marked, SR)
    assert found.is_generated and found.p_value < 1e-30 and found.confidence == 1.0
    assert found.offset_samples == 123_456 % P
    assert detect(marked[5000:], SR).offset_samples == (123_456 + 5000) % P  # cut anywhere
    for real in (piano, tone(440, 8.0), np.random.default_rng(0).normal(0, 0.1, 8 * SR)):
        miss = detect(real, SR)
        assert not miss.is_generated and miss.score < WATERMARK.threshold and miss.p_value > 1e-4
    # another key does not find this one
    assert not detect(marked, SR, WatermarkConfig(key="someone else")).is_generated


def test_marking_chunk_by_chunk_equals_marking_the_whole(piano: np.ndarray) -> None:
    whole = embed(piano, SR, start_sample=-1200)  # a lead-in of 1,200 samples before sample 0
    cuts = [0, 1200, 1201, 7000, 24_000 + 1200, 60_001, len(piano)]
    chunks = [embed(piano[a:b], SR, start_sample=a - 1200) for a, b in pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert whole.dtype == np.float32 and not np.array_equal(whole, piano)
    stereo = embed(np.stack([piano, 0.5 * piano]), SR)
    np.testing.assert_array_equal(stereo[0], embed(piano, SR))


def _vorbis(x: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    sf.write(buffer, x, SR, format="OGG", subtype="VORBIS", compression_level=0.7)  # q0.3
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


@pytest.mark.parametrize("attack", ["gain -10 dB", "gain +10 dB", "44.1 kHz", "mix -6 dB",
                                    "vorbis q0.3"])
def test_the_mark_survives(attack: str, piano: np.ndarray, other: np.ndarray) -> None:
    marked, rate = embed(piano, SR, start_sample=777), SR
    if attack.startswith("gain"):
        marked = marked * np.float32(10 ** (float(attack.split()[1]) / 20))
    elif attack == "44.1 kHz":
        marked, rate = resample(marked[None], SR, 44_100)[0], 44_100
    elif attack == "mix -6 dB":
        other = other * np.sqrt(np.mean(piano ** 2) / np.mean(other ** 2))
        marked = marked + np.float32(10 ** (-6 / 20)) * other
        assert not detect(piano + np.float32(0.5) * other, SR).is_generated
    else:
        marked = _vorbis(marked)
    found = detect(marked, rate)
    assert found.is_generated, found
    assert found.offset_samples in {777 % P, 777 % P + 1, 777 % P - 1}


def test_the_mark_is_inaudible_by_the_numbers(piano: np.ndarray) -> None:
    marked = embed(piano, SR)
    snr_db = 10 * np.log10(np.sum(piano ** 2) / np.sum((marked - piano) ** 2))
    assert SNR_FLOOR_DB <= snr_db == pytest.approx(WATERMARK.snr_db, abs=1.0)
    noise = np.random.default_rng(1).standard_normal(len(piano)).astype(np.float32)
    noise *= np.sqrt(np.sum((marked - piano) ** 2) / np.sum(noise ** 2))
    # far less change in the log-mel spectrum than white noise of the same power
    assert log_mel_l1(piano, marked, SR)[0] < 0.5 * log_mel_l1(piano, piano + noise, SR)[0]
    silence = np.zeros(SR, np.float32)
    np.testing.assert_array_equal(embed(silence, SR), silence)  # nothing where nothing plays
    assert detect(silence, SR).p_value == 1.0 and detect(piano[:100], SR).score == 0.0


def test_rates_config_and_p_values() -> None:
    piano48 = render_piano(progression_notes(), 48_000)
    assert detect(embed(piano48, 48_000, 5), 48_000).is_generated
    with pytest.raises(ConfigError, match="44100 Hz"):
        embed(piano48, 44_100)
    for bad in ({"band_hz": (100.0, 13_000.0)}, {"strength": 0.0}, {"key": ""},
                {"false_positive_rate": 1.0}, {"period_samples": 1000}):
        with pytest.raises(ConfigError):
            WatermarkConfig(**bad)
    assert p_value(WATERMARK.threshold, P) == pytest.approx(WATERMARK.false_positive_rate)
    assert p_value(3.0, P) > 0.99 and p_value(40.0, P) < 1e-300


def test_continuo_detect_reports_each_file(piano: np.ndarray, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    sf.write(tmp_path / "marked.wav", embed(piano, SR, 99), SR, subtype="PCM_16")
    sf.write(tmp_path / "real.flac", piano, SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert main(["detect", str(tmp_path / "marked.wav"), str(tmp_path / "real.flac")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'marked.wav'}: generated: yes  confidence 100.0")
    assert lines[1].startswith(f"{tmp_path / 'real.flac'}: generated: no ")
    assert main(["detect", "--json", str(tmp_path / "missing.wav"), str(tmp_path / "broken.wav"),
                 str(tmp_path / "marked.wav")]) == 2
    out = capsys.readouterr()
    assert "missing.wav: file not found" in out.err and "broken.wav" in out.err
    assert "2 of 3 files could not be read" in out.err
    assert json.loads(out.out)["generated"] is True


def test_offline_continuations_carry_the_mark(model_dir: Path, tmp_path: Path,
                                              piano: np.ndarray) -> None:
    from continuo.server.continuation import Continuation

    pipeline = Continuation(write_preset(tmp_path, model_dir))
    plain = pipeline.generate(piano[:SR], SR, 1.0, seed=4, watermark=False)
    marked = pipeline.generate(piano[:SR], SR, 1.0, seed=4)
    assert marked.watermarked and not plain.watermarked
    np.testing.assert_array_equal(marked.audio, embed(plain.audio, SR, 0))
    np.testing.assert_array_equal(marked.lead_in,
                                  embed(plain.lead_in, SR, -len(plain.lead_in)))


def _job(server, seed: int = 5) -> tuple[list, dict]:
    with server.client() as client:
        accepted = client.generate(clip="prompt.wav", tempo=120, bars=3, chunk_beats=1.5,
                                   seed=seed)
        return collect(client, accepted["job"])


def test_the_servers_chunks_carry_the_mark_and_no_watermark_leaves_it_out(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The tiny random model plays faint flat noise (about -70 dBFS), where a mark 45 dB down is
    # more than 6 s can reveal (tonal piano shows it in 2 s): this server marks at 26 dB down.
    with ThreadPoolExecutor(2) as pool:  # both start at once
        starting = [pool.submit(start_server, model_dir, tmp_path / name, "--ahead-s", "1000",
                                *flags) for name, flags in
                    (("on", ("--watermark-strength", "0.05")), ("off", ("--no-watermark",)))]
    failed = [f.exception() for f in starting if f.exception() is not None]
    for server in [f.result() for f in starting if f.exception() is None] if failed else []:
        server.stop()
    if failed:
        raise failed[0]
    marked_server, plain_server = (f.result() for f in starting)
    try:
        chunks, done = _job(marked_server)
        plain, plain_done = _job(plain_server)
    finally:
        marked_server.stop()
        plain_server.stop()
    # the same seed makes the same music: each chunk is the plain one marked at its position,
    # and chunk 0's lead-in the samples just before it
    for chunk, reference in zip(chunks, plain, strict=True):
        start = chunk.header["start_sample"]
        np.testing.assert_allclose(chunk.pcm, embed(reference.pcm, SR, start, 0.05), atol=1e-6)
    lead, plain_lead = (np.frombuffer(c[0].header["lead_in"], "<f4") for c in (chunks, plain))
    np.testing.assert_allclose(lead, embed(plain_lead, SR, -len(plain_lead), 0.05), atol=1e-6)
    assert not np.allclose(joined(chunks), joined(plain), atol=1e-6)
    sidecars = [json.loads(Path(d["sidecar"]).read_text()) for d in (done, plain_done)]
    assert sidecars[0]["watermark"]["on"] is True and sidecars[0]["watermark"]["strength"] == 0.05
    assert sidecars[1]["watermark"] == {"on": False}
    assert main(["detect", done["recording"], plain_done["recording"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "generated: yes" in lines[0] and "generated: no " in lines[1], lines


def test_the_evaluation_writes_its_section_and_keeps_the_others(
        piano: np.ndarray, other: np.ndarray, tmp_path: Path) -> None:
    from continuo.server.data.manifest import ManifestItem, make_manifest, write_manifest
    from continuo.server.evaluation import watermark_eval

    items = []
    for name, audio in (("a", piano), ("b", other)):
        path = tmp_path / "data" / "test" / f"{name}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, SR)
        items.append(ManifestItem(path, f"piece/{name}", "test", len(audio) / SR))
    write_manifest(make_manifest(tmp_path / "data", SR, "folder", items))
    report = tmp_path / "reliability.md"
    report.write_text("# Reliability\n\n## Soak\n\nsoak figures\n\n## Watermark\n\nold figures\n\n"
                      "## Security\n\nsecurity figures\n")
    assert watermark_eval.main(["--data", str(tmp_path / "data"), "--clips", "2", "--seconds",
                                "4", "--continuations", "0", "--report", str(report),
                                "--out", str(tmp_path / "out")]) == 0
    text = report.read_text()
    assert "soak figures" in text and "security figures" in text and "old figures" not in text
    assert text.index("## Soak") < text.index("## Watermark") < text.index("## Security")
    assert "| clean | 2/2 | 0/2 | 100.0 % |" in text and "| the watermark | 45.0 |" in text
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["null"]["trials"] == 2 * 25 and results["null"]["flagged"] == 0
