"""`continuo data folder`: a user's own WAV/FLAC/OGG files as a data set.

Every audio file under the source folder (searched recursively) is one piece: it is read with
`load_audio` (downmixed to mono, resampled with soxr), trimmed, cut into segments and split by
file, exactly as the piano renderer does (`segments.py`). A file that cannot be read (corrupt,
empty, silent, longer than `MAX_FILE_S`) is skipped and listed in the manifest's failures.
Other files are ignored. The run resumes like `continuo data piano`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from continuo.server.audio import SUPPORTED_SUFFIXES, load_audio
from continuo.server.data.build import build_dataset
from continuo.server.data.manifest import Manifest
from continuo.server.data.progress import PieceResult
from continuo.server.data.segments import SegmentConfig, unique_stems, write_segments
from continuo.server.errors import ContinuoError, DataError

MAX_FILE_S = 3600.0  # longest file read (whole, in memory: 1 h of 48 kHz stereo is 1.4 GB)


@dataclass(frozen=True)
class FolderTask:
    """One source file to read, segment and write into `out`."""

    path: Path
    piece: str
    stem: str
    out: Path
    config: SegmentConfig


def find_audio(src: Path, exclude: Path | None = None) -> dict[str, Path]:
    """piece id (the path under `src`, 'takes/one.wav') → file, for every audio file, sorted.

    Files under `exclude` (an output folder inside the source) are left out.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    skip = Path(exclude).resolve() if exclude is not None else None
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        if skip is not None and Path(folder).is_relative_to(skip):
            continue
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in SUPPORTED_SUFFIXES and not name.startswith("."):
                found[path.relative_to(src).as_posix()] = path
    if not found:
        raise DataError(f"{src}: no audio files ({', '.join(SUPPORTED_SUFFIXES)}) found")
    return found


def prepare_folder(
    src: Path,
    out: Path,
    *,
    config: SegmentConfig | None = None,
    jobs: int = 1,
    max_hours: float | None = None,
    show_progress: bool = True,
) -> Manifest:
    """Turn the audio files under `src` into a data folder `out`; resumable."""
    config = config or SegmentConfig()
    out = Path(out).resolve()
    files = find_audio(src, exclude=out)
    stems = unique_stems(list(files))
    tasks = {
        piece: FolderTask(path, piece, stems[piece], out, config) for piece, path in files.items()
    }
    settings = {**asdict(config), "src": str(Path(src).resolve())}
    return build_dataset(
        out, tasks, prepare_file, source="folder", sample_rate=config.sample_rate,
        settings=settings, jobs=jobs, max_hours=max_hours, show_progress=show_progress,
    )


def prepare_file(task: FolderTask) -> PieceResult:
    """Worker: read, downmix, resample, segment one file. Errors become the result."""
    try:
        audio = load_audio(
            task.path, sample_rate=task.config.sample_rate, mono=True, max_seconds=MAX_FILE_S
        )
        items = write_segments(audio.samples[0], task.config, task.out, task.piece, task.stem)
    except (ContinuoError, OSError, ValueError, MemoryError) as err:
        return PieceResult(task.piece, error=f"{type(err).__name__}: {err}"[:500])
    if not items:
        return PieceResult(task.piece, error="shorter than min_segment_seconds after trimming")
    return PieceResult(task.piece, tuple(items))
