"""`continuo data piano`: the music21 corpus rendered to piano audio, 24 kHz mono.

Each corpus file is one piece: music21 parses it, every part's instrument becomes a piano
(GM program 0), music21 writes MIDI and the `fluidsynth` binary renders it straight at the
target rate with the FluidR3_GM piano (reverb and chorus off, float output so nothing clips).
The audio is downmixed, trimmed and cut into segments (`segments.py`).

Formats: MusicXML (.mxl/.xml/.musicxml), Humdrum (.krn) and ABC (.abc). An .abc file may hold
an opus of many tunes; the whole file is one piece (its tunes share a collection, so they stay
in one split), each tune rendered and segmented on its own, a tune music21 cannot write
skipped, and the piece capped at about `max_piece_s`. Roman-numeral analyses (.rntxt) are
skipped: they restate pieces already in the corpus as block chords; so are the corpus's demos
and theory exercises. A file that exists in two formats is taken once, in the first format of
`FORMATS`.

Where the time goes (2 cores): on 24 pieces of the default order, fluidsynth ~55 % of the CPU,
music21's MIDI writing ~25 %, parsing ~13 %, FLAC writing ~7 %, ~300x realtime on an idle
machine; on the 3-hour set (59 pieces, with long quartet and symphony movements) music21 takes
~78 % (MIDI 44 %, parse 34 %), fluidsynth 20 %, ~60x realtime beside a codec training run.
fluidsynth renders straight at the target rate and loads only the samples a piece plays.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from continuo.server.audio import load_audio
from continuo.server.data.build import build_dataset
from continuo.server.data.manifest import MANIFEST_NAME, Manifest, ManifestItem, load_manifest
from continuo.server.data.progress import PieceResult
from continuo.server.data.segments import SegmentConfig, unique_stems, write_segments
from continuo.server.errors import ConfigError, DataError

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FORMATS: tuple[str, ...] = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
# corpus folders of examples rather than music (a drum pattern, triad drills), unless asked for
NOT_MUSIC: frozenset[str] = frozenset({"demos", "theoryExercises"})
SYNTH_GAIN = 0.6
MAX_PIECE_S = 6 * 3600.0  # longest rendering accepted (one whole opus of tunes)
_REARM_S = 0.05  # a swallowed timeout fires again after this


@dataclass(frozen=True)
class PianoTask:
    """Everything a worker process needs to render one piece."""

    path: Path
    piece: str
    stem: str
    out: Path
    config: SegmentConfig
    soundfont: Path
    timeout_s: float
    max_piece_s: float


def check_renderer(soundfont: Path = DEFAULT_SOUNDFONT) -> None:
    """DataError naming the Debian package when fluidsynth or the soundfont is missing."""
    if shutil.which("fluidsynth") is None:
        raise DataError("the `fluidsynth` binary is not on PATH (apt-get install fluidsynth)")
    if not Path(soundfont).is_file():
        raise DataError(
            f"{soundfont}: soundfont not found (apt-get install fluid-soundfont-gm, "
            "or pass --soundfont PATH)"
        )


def corpus_pieces(composers: Sequence[str] | None = None) -> dict[str, Path]:
    """piece id → file of music21's corpus, in a fixed order that takes turns between folders.

    The id is the path under the corpus folder without its suffix ('bach/bwv66.6'). The order
    goes round the top-level folders (composers, collections), each in a hashed order, so
    `--limit` and `--max-hours` take a varied sample, the same on every machine, rather than
    mostly Palestrina and Ryan's fiddle tunes (3 of 4 corpus files). `composers` keeps only
    those folders.
    """
    from music21 import corpus

    root = Path(corpus.__file__).parent
    wanted = {c.strip().lower() for c in composers} if composers else None
    found: dict[str, Path] = {}
    for path in sorted(Path(p) for p in corpus.getPaths()):
        if path.suffix.lower() not in FORMATS:
            continue
        piece = piece_id(path, root)
        folder = piece.split("/")[0]
        skip = folder in NOT_MUSIC if wanted is None else folder.lower() not in wanted
        if skip:
            continue
        rank = FORMATS.index(path.suffix.lower())
        if piece not in found or rank < FORMATS.index(found[piece].suffix.lower()):
            found[piece] = path
    if wanted and not found:
        raise DataError(f"no corpus pieces for composers {sorted(wanted)}")
    return {piece: found[piece] for piece in _round_robin(found)}


def _round_robin(pieces: Iterable[str]) -> list[str]:
    """Pieces hashed into order within each top-level folder, then taken a folder at a time."""
    folders: dict[str, list[str]] = {}
    for piece in pieces:
        folders.setdefault(piece.split("/")[0], []).append(piece)
    # salted: the split's own (unsalted) hash would put each folder's held-out pieces first
    ranked = [
        sorted(group, key=lambda p: hashlib.sha256(f"order:{p}".encode()).digest())
        for _, group in sorted(folders.items())
    ]
    longest = max((len(group) for group in ranked), default=0)
    return [group[k] for k in range(longest) for group in ranked if k < len(group)]


def piece_id(path: Path, corpus_root: Path) -> str:
    """'bach/bwv66.6' for corpus_root/bach/bwv66.6.mxl; 'folder/name' for a file elsewhere."""
    path = Path(path)
    try:
        rel = path.relative_to(corpus_root)
    except ValueError:
        rel = Path(path.parent.name) / path.name
    return rel.with_suffix("").as_posix()


def render_corpus(
    out: Path,
    *,
    pieces: Mapping[str, Path] | None = None,
    composers: Sequence[str] | None = None,
    exclude: Collection[str] = (),
    limit: int | None = None,
    max_hours: float | None = None,
    jobs: int = 1,
    soundfont: Path = DEFAULT_SOUNDFONT,
    config: SegmentConfig | None = None,
    timeout_s: float = 600.0,
    max_piece_s: float = 180.0,
    show_progress: bool = True,
) -> Manifest:
    """Render `pieces` (default: the music21 corpus) to piano segments in `out`; resumable.

    An ABC collection stops after the tune that takes it past `max_piece_s` of audio (one
    file of the Essen collection holds 300 tunes, 1.5 hours: uncapped, a few such files would
    be most of a 3-hour data set, and all of it one-line folk melodies). Piece ids in `exclude`
    are skipped (e.g. another data set's, for an evaluation set of pieces it never saw).
    """
    config = config or SegmentConfig()
    check_renderer(soundfont)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 piece, got {limit}")
    if not (timeout_s > 0 and max_piece_s > 0):
        raise ConfigError(f"timeout_s and max_piece_s must be > 0, got {timeout_s}, {max_piece_s}")
    chosen = dict(pieces) if pieces is not None else corpus_pieces(composers)
    skipped = set(exclude)
    chosen = dict([item for item in chosen.items() if item[0] not in skipped][:limit])
    out = Path(out).resolve()
    stems = unique_stems(list(chosen))
    tasks = {
        piece: PianoTask(
            Path(path), piece, stems[piece], out, config, Path(soundfont), timeout_s, max_piece_s
        )
        for piece, path in chosen.items()
    }
    settings = {**asdict(config), "soundfont": Path(soundfont).name, "synth_gain": SYNTH_GAIN,
                "max_piece_s": max_piece_s}
    return build_dataset(
        out, tasks, render_piece, source="music21", sample_rate=config.sample_rate,
        settings=settings, jobs=jobs, max_hours=max_hours, show_progress=show_progress,
    )


def excluded_pieces(path: Path) -> set[str]:
    """Piece ids to skip: those of a data folder's manifest.json (or the folder), or of a pieces
    list (one `split piece-id` per line, `#` comments, like models/piano/pieces.txt)."""
    path = Path(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return {item.piece for item in load_manifest(path if path.is_dir() else path.parent).items}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the pieces to exclude ({err})") from err
    rows = [line.split(maxsplit=1) for line in lines if line.strip() and not line.startswith("#")]
    if any(len(row) != 2 for row in rows):
        raise DataError(f"{path}: each line must be 'split piece-id'")
    return {piece.strip() for _, piece in rows}


def render_piece(task: PianoTask) -> PieceResult:
    """Worker: parse, set piano, write MIDI, synthesize, segment. Errors become the result."""
    timing = {"parse_s": 0.0, "midi_s": 0.0, "synth_s": 0.0, "write_s": 0.0}
    try:
        with tempfile.TemporaryDirectory(prefix="continuo-piano-") as tmp, _deadline(
            task.timeout_s
        ), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _timed(timing, "parse_s"):
                scores = _parse_scores(task.path)
            items, skipped = _render_scores(scores, task, Path(tmp), timing)
    except Exception as err:  # any bad piece is counted, never fatal
        return PieceResult(task.piece, error=_describe(err), timing_s=timing)
    if not items:
        error = f"all {len(skipped)} scores failed, first {skipped[0]}" if skipped else (
            "no audible audio"
        )
        return PieceResult(task.piece, error=error, timing_s=timing, skipped=tuple(skipped))
    return PieceResult(task.piece, tuple(items), timing_s=timing, skipped=tuple(skipped))


def _render_scores(
    scores: list, task: PianoTask, tmp: Path, timing: dict[str, float]
) -> tuple[list[ManifestItem], list[str]]:
    """Segments of each score in turn; a score that fails is skipped (with why) if the piece
    has others, so one bad tune does not lose a whole opus."""
    items: list[ManifestItem] = []
    skipped: list[str] = []
    for number, score in enumerate(scores):
        if sum(item.seconds for item in items) >= task.max_piece_s:
            break
        midi = tmp / f"{number}.mid"
        try:
            with _timed(timing, "midi_s"):
                _set_piano(score)
                _write_midi(score, midi)
                _channel_per_part(midi)
            with _timed(timing, "synth_s"):
                samples = synthesize(midi, task.soundfont, task.config.sample_rate, tmp)
        except Exception as err:
            if len(scores) == 1 or isinstance(err, TimeoutError):  # the deadline ends the piece
                raise
            skipped.append(f"score {number}: {_describe(err)}")
            continue
        with _timed(timing, "write_s"):
            items += write_segments(samples, task.config, task.out, task.piece, task.stem,
                                    first_index=len(items))
    return items, skipped


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip()[:500]


def _parse_scores(path: Path) -> list:
    """The music21 scores in a file (several for an ABC opus)."""
    from music21 import converter, stream

    parsed = converter.parse(path, forceSource=True)
    if isinstance(parsed, stream.Opus):
        return list(parsed.scores)
    return [parsed]


def _set_piano(score) -> None:
    """Every part played by a piano (GM program 0): other instruments removed."""
    from music21 import instrument

    parts = list(score.parts) or [score]
    for part in parts:
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)
        part.insert(0, instrument.Piano())


def _write_midi(score, midi: Path) -> None:
    """music21's MIDI, repeats played out; a score whose repeats music21 cannot expand
    ('badly formed repeats', about 1 in 20 corpus files) is written once through instead."""
    from music21 import bar, repeat, spanner, stream

    try:
        score.write("midi", fp=midi)
        return
    except repeat.ExpanderException:
        pass
    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = None
    marks = (repeat.RepeatExpression, spanner.RepeatBracket)
    for mark in list(score.recurse().getElementsByClass(marks)):
        mark.activeSite.remove(mark)
    score.write("midi", fp=midi)


def _channel_per_part(midi: Path) -> None:
    """Give each track (part) its own MIDI channel with a piano program.

    music21 puts parts with the same instrument on one channel, where a unison in two parts
    ends when the shorter note does; channel 10 (drums) is never used.
    """
    import mido

    song = mido.MidiFile(midi)
    melodic = [c for c in range(16) if c != 9]
    for number, track in enumerate(t for t in song.tracks if _has_notes(t)):
        channel = melodic[number % len(melodic)]
        messages = [mido.Message("program_change", channel=channel, program=0, time=0)]
        for message in track:
            if message.type == "program_change":  # dropped; its delta time is kept
                messages.append(mido.MetaMessage("text", text="", time=message.time))
            elif hasattr(message, "channel"):
                messages.append(message.copy(channel=channel))
            else:
                messages.append(message)
        track[:] = messages
    song.save(midi)


def _has_notes(track) -> bool:
    return any(message.type == "note_on" for message in track)


def synthesize(midi: Path, soundfont: Path, sample_rate: int, tmp: Path) -> np.ndarray:
    """Render a MIDI file with fluidsynth; mono float32 [T] at `sample_rate`."""
    wav = tmp / (midi.stem + ".wav")
    command = [
        "fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(SYNTH_GAIN),
        "-r", str(sample_rate), "-O", "float", "-F", str(wav),
        # load only the samples the piece plays, not all 148 MB of FluidR3_GM: the same audio,
        # 2x faster on a short tune, 20% on a long piece
        "-o", "synth.dynamic-sample-loading=1", str(soundfont), str(midi),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.exists():
        raise DataError(f"fluidsynth failed on {midi.name}: {done.stderr.strip()[-300:]}")
    audio = load_audio(wav, sample_rate=sample_rate, mono=True, max_seconds=MAX_PIECE_S)
    return audio.samples[0]


@contextlib.contextmanager
def _timed(timing: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timing[stage] += time.perf_counter() - start


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """TimeoutError after `seconds` (SIGALRM; only in a main thread, a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum: int, frame: object) -> None:
        # The exception may land where Python swallows it (a gc callback, a __del__): fire
        # again shortly, until the deadline's context is left.
        signal.setitimer(signal.ITIMER_REAL, _REARM_S)
        raise TimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        while True:  # a re-armed alarm may fire while we disarm it: disarm again
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except TimeoutError:
                continue
