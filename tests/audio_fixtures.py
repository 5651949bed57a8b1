"""Real audio for tests: generated tones and piano rendered with FluidSynth (FluidR3_GM).

`render_piano(notes)` writes a MIDI file with mido and renders it with the `fluidsynth` binary,
the same way the data pipeline does; tests that use it are skipped where fluidsynth or the
soundfont is missing (CI installs both).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

# (midi pitch, start beat, length in beats)
Note = tuple[int, float, float]

C_MAJOR_PROGRESSION: list[list[int]] = [
    [60, 64, 67],  # C
    [57, 60, 64],  # Am
    [53, 57, 60],  # F
    [55, 59, 62],  # G
]


def tone(freq_hz: float, seconds: float, sample_rate: int = 24000, amp: float = 0.3) -> np.ndarray:
    """A sine tone with 10 ms fades, float32 [T]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = amp * np.sin(2 * np.pi * freq_hz * t)
    fade = min(len(x) // 2, int(0.01 * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[len(x) - fade :] *= ramp[::-1]
    return x.astype(np.float32)


def progression_notes(
    chords: list[list[int]] = C_MAJOR_PROGRESSION, beats_per_chord: float = 2.0, transpose: int = 0
) -> list[Note]:
    """Block chords, one every `beats_per_chord` beats, with a melody note on top."""
    notes: list[Note] = []
    for i, chord in enumerate(chords):
        start = i * beats_per_chord
        notes += [(p + transpose, start, beats_per_chord) for p in chord]
        notes.append((chord[-1] + 12 + transpose, start, beats_per_chord / 2))
    return notes


def write_midi(notes: list[Note], path: Path, bpm: float = 120.0, program: int = 0) -> Path:
    """A one-track MIDI file (480 ppq) of `notes` played by GM `program` (0 = piano)."""
    ppq = 480
    mid = mido.MidiFile(ticks_per_beat=ppq)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("program_change", program=program, time=0))
    events = []
    for pitch, start, length in notes:
        events.append((round(start * ppq), 1, pitch))
        events.append((round((start + length) * ppq), 0, pitch))
    now = 0
    for tick, on, pitch in sorted(events):
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=90 if on else 0, time=tick - now))
        now = tick
    mid.save(path)
    return path


def needs_fluidsynth() -> None:
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        pytest.skip("fluidsynth and fluid-soundfont-gm are needed (installed by .ci/run)")


def render_piano(notes: list[Note], sample_rate: int = 24000, bpm: float = 120.0) -> np.ndarray:
    """Render `notes` on the FluidR3_GM piano; mono float32 [T] at `sample_rate`."""
    needs_fluidsynth()
    with tempfile.TemporaryDirectory() as tmp:
        midi = write_midi(notes, Path(tmp) / "clip.mid", bpm=bpm)
        wav = Path(tmp) / "clip.wav"
        subprocess.run(
            ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6",
             "-r", str(sample_rate), "-F", str(wav), str(SOUNDFONT), str(midi)],
            check=True, capture_output=True,
        )
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == sample_rate
    return x.mean(axis=1)
