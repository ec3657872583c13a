"""`mpoxscan predict`: screen photos with an exported model (ONNX Runtime only)."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

from mpoxscan.deploy.runtime import Screener, Screening
from mpoxscan.errors import MpoxscanError
from mpoxscan.images import IMAGE_SUFFIXES, load_image


def expand_inputs(args: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their photos, recursively, by suffix), glob patterns and list files (``@list.txt``: one path
    per line, relative to the list's folder) -> (paths, [(arg, error)])."""
    paths: list[Path] = []
    errors: list[tuple[str, str]] = []
    for arg in args:
        p = Path(arg)
        if arg.startswith("@") and len(arg) > 1:
            listed, bad = _list_file(Path(arg[1:]))
            paths += listed
            errors += bad
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            paths += found
            if not found:
                errors.append((arg, "folder holds no photo"))
        elif p.exists():
            paths.append(p)
        elif glob.has_magic(arg):  # a pattern the shell did not expand (quoted, or on Windows)
            found = sorted(Path(f) for f in glob.glob(arg, recursive=True) if Path(f).is_file())
            paths += found
            if not found:
                errors.append((arg, "no file matches this pattern"))
        else:
            errors.append((arg, "no such file or folder"))
    return list(dict.fromkeys(paths)), errors


def _list_file(path: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        return [], [(f"@{path}", f"cannot read the list ({exc.strerror or exc})")]
    except UnicodeDecodeError:
        return [], [(f"@{path}", "the list is not UTF-8 text")]
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        return [], [(f"@{path}", "the list names no photo")]
    # Listed photos are not checked here: a missing one becomes its own error row when it is screened.
    return [Path(e) if Path(e).is_absolute() else path.parent / e for e in entries], []


def screen_files(screener: Screener, paths: list[Path]) -> Iterator[tuple[Path, Screening | None, str | None]]:
    """(path, answer, None) or (path, None, one-line reason) for each photo, in order; one bad photo stops nothing."""
    for path in paths:
        try:
            image = load_image(path, min_side=screener.input_size)
        except MpoxscanError as exc:
            yield path, None, str(exc)
            continue
        yield path, screener.screen(image), None
