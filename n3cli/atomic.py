"""Atomic file output: a file the tool writes is either complete or untouched, never half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None], *, mode: int = 0o644,
                 overwrite: bool = True, fsync: bool = False) -> Path:
    """Run ``write(temporary_path)`` in ``path``'s folder, then rename the result over ``path``.

    The temporary file (``.<name>.<random>.part``) is removed on any failure, Ctrl-C included, so the
    target keeps its previous content or stays absent. ``mode`` is applied before the rename (a
    temporary file is private); ``fsync`` flushes the data to disk first. With ``overwrite=False`` the
    result is published with a hard link, which refuses a target that exists, even one that appeared
    while writing (:class:`FileExistsError`; that file is left alone); on a file system without hard
    links it falls back to a check and a rename. Errors from creating the temporary file (e.g. a
    missing or read-only folder) propagate as :class:`OSError`.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


@contextlib.contextmanager
def staged(targets: Sequence[Path], *, overwrite: bool = False) -> Iterator[list[Path]]:
    """Temporary paths beside ``targets`` (``.<stem>.<random>.part<suffix>``: the suffix is kept, so a format that
    follows it still does) for the block to write; when the block ends without error they are moved into place
    together. So a failure in any of several writes leaves every target as it was, an existing file replaced with
    ``overwrite`` included. Without ``overwrite`` a target that appeared meanwhile is refused
    (:class:`FileExistsError`) and the targets published before it are removed again. Temporary files are always
    removed."""
    stages: list[Path] = []
    published: list[Path] = []
    existed = {t for t in targets if t.exists()}
    try:
        for t in targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{t.stem}.", suffix=f".part{t.suffix}", dir=t.parent)
            os.close(fd)
            stages.append(Path(tmp))
        yield list(stages)
        for stage, target in zip(stages, targets, strict=True):
            os.chmod(stage, new_file_mode(target))  # a temporary file is private (0o600)
            if overwrite:
                os.replace(stage, target)
            else:
                _publish_new(str(stage), target)
            published.append(target)
    except BaseException:
        for target in published:
            if target not in existed:
                with contextlib.suppress(OSError):
                    target.unlink()
        raise
    finally:
        for stage in stages:
            with contextlib.suppress(OSError):
                stage.unlink()


def new_file_mode(path: Path) -> int:
    """The permissions a file written to ``path`` gets: those of the file there now, else a new file's (0o666 less
    the umask)."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomic` for a UTF-8 text file (mode 0o644, replacing any previous file)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _publish_new(tmp: str, target: Path) -> None:
    """Move ``tmp`` to ``target`` unless ``target`` exists (then :class:`FileExistsError`)."""
    try:
        os.link(tmp, target)  # atomic, and refuses an existing target
    except FileExistsError:
        raise
    except OSError:  # no hard links here (e.g. some network or FAT file systems)
        if target.exists():
            raise FileExistsError(errno.EEXIST, "already exists", str(target)) from None
        os.replace(tmp, target)
    else:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
