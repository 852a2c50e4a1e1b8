"""write_atomic: the target is either complete or untouched, and no temporary file outlives a write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from n3cli.atomic import write_atomic, write_text_atomic


def test_writes_with_mode_and_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["out.txt"]
    write_atomic(target, lambda tmp: Path(tmp).write_text("again"), mode=0o600)
    assert target.read_text() == "again" and stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise error

    with pytest.raises(type(error)):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_no_overwrite_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"

    def racing(tmp: str) -> None:
        Path(tmp).write_text("ours")
        target.write_text("theirs")

    with pytest.raises(FileExistsError):
        write_atomic(target, racing, overwrite=False)
    assert target.read_text() == "theirs" and os.listdir(tmp_path) == ["out.txt"]


def test_missing_folder_raises_oserror_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "missing" / "out.txt", "x")
    assert os.listdir(tmp_path) == []


def test_no_overwrite_without_hard_links_still_refuses_and_publishes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out.txt"
    write_atomic(target, lambda tmp: Path(tmp).write_text("new"), overwrite=False)
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(FileExistsError):
        write_atomic(target, lambda tmp: Path(tmp).write_text("other"), overwrite=False)
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]
