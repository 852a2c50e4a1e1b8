"""``n3 data download``: fetch a test set's archive, keep only its images, verify them, install atomically.

Nothing is half-installed: the archive is fetched and unpacked into a hidden temporary folder under
the data root, every image is checked against the registered sha256 sums, and only then is the
folder renamed to ``<data root>/<set>``. Archive members are read one by one and written by name
(never ``extractall``); an archive holding absolute paths or ``..`` components is refused.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from .datasets import DatasetError, DatasetExistsError, DatasetSpec, data_root, get_spec, image_files, sha256_file

CHUNK = 1 << 16
#: Largest image accepted from an archive (a guard against archive bombs).
MAX_MEMBER_BYTES = 256 << 20


def safe_parts(name: str) -> tuple[str, ...]:
    """The path components of an archive member name; refuses absolute paths and ``..``."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise DatasetError(f"archive member {name!r} has an absolute path; refusing the archive")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if ".." in parts:
        raise DatasetError(f"archive member {name!r} points outside the archive; refusing the archive")
    return parts


def _selected(parts: tuple[str, ...], spec: DatasetSpec) -> bool:
    """Whether a member is one of the set's images: in the set's folder, with its extension and name."""
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    fname = parts[-1]
    if not fname.lower().endswith(spec.ext):
        return False
    if spec.member_dir:
        want = tuple(p for p in spec.member_dir.strip("/").split("/") if p)
        folder = parts[:-1]
        if len(folder) < len(want) or folder[len(folder) - len(want):] != want:
            return False
    sums = spec.checksums
    return not sums or fname in sums


def _copy(src: IO[bytes], dest: Path, name: str) -> None:
    total = 0
    with open(dest, "xb") as out:
        while block := src.read(CHUNK):
            total += len(block)
            if total > MAX_MEMBER_BYTES:
                raise DatasetError(f"archive member {name!r} is over {MAX_MEMBER_BYTES >> 20} MiB; refusing it")
            out.write(block)


def extract_images(archive: Path, dest: Path, spec: DatasetSpec) -> list[Path]:
    """Write the set's images from a zip or tar archive into ``dest`` (flat); returns the files."""
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def take(name: str, parts: tuple[str, ...], is_file: bool, opener: Callable[[], IO[bytes] | None]) -> None:
        if not _selected(parts, spec):
            return
        if not is_file:
            raise DatasetError(f"archive member {name!r} is a link or special file; refusing it")
        fname = parts[-1]
        if fname in written:
            raise DatasetError(f"archive holds {fname} twice ({name}); cannot tell which to keep")
        fh = opener()
        if fh is None:
            raise DatasetError(f"archive member {name!r} cannot be read")
        with fh:
            _copy(fh, dest / fname, name)
        written[fname] = dest / fname

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            all_parts = [safe_parts(i.filename) for i in infos]  # check every name before writing
            for info, parts in zip(infos, all_parts, strict=True):
                if info.is_dir():
                    continue
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                take(info.filename, parts, not is_link, lambda info=info: zf.open(info))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            all_parts = [safe_parts(m.name) for m in members]
            for member, parts in zip(members, all_parts, strict=True):
                if member.isdir():
                    continue
                take(member.name, parts, member.isfile(), lambda member=member: tf.extractfile(member))
    else:
        raise DatasetError(f"{archive.name}: not a zip or tar archive")
    return sorted(written.values())


def verify_folder(folder: Path, spec: DatasetSpec) -> list[str]:
    """Problems of a set's folder (missing files, checksum mismatches, wrong count); empty when fine."""
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    present = {p.name: p for p in image_files(folder, spec.ext)}
    sums = spec.checksums
    problems: list[str] = []
    if sums:
        missing = sorted(set(sums) - set(present))
        if missing:
            problems.append(f"{len(missing)} of {len(sums)} images missing (first: {missing[0]})")
        for fname, digest in sorted(sums.items()):
            if fname in present and sha256_file(present[fname]) != digest:
                problems.append(f"checksum mismatch for {spec.name}/{fname}")
    elif len(present) != spec.count:
        problems.append(f"{len(present)} images, expected {spec.count}")
    return problems


def _progress(console: Console | None) -> Progress | None:
    if console is None:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def fetch(url: str, dest: Path, console: Console | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` (http or https only) to ``dest``, with a progress bar when ``console`` is given."""
    if not url.lower().startswith(("http://", "https://")):
        raise DatasetError(f"refusing to download {url!r}: only http and https URLs are fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "n3cli"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress(console)
            with bar if bar is not None else _nothing():
                task = bar.add_task(f"download {dest.parent.name.lstrip('.')}", total=total) if bar else None
                while block := resp.read(CHUNK):
                    out.write(block)
                    if bar is not None and task is not None:
                        bar.advance(task, len(block))
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot download {url} ({reason})") from None
    return dest


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def download(name: str, data_dir: str | os.PathLike[str] | None = None, *, console: Console | None = None,
             force: bool = False, spec: DatasetSpec | None = None, timeout: float = 60.0) -> tuple[Path, bool]:
    """Fetch, verify and install a registered set under the data root.

    Returns the set's folder and whether anything was downloaded (False: already present and valid).
    ``force`` replaces an existing folder that does not verify.
    """
    spec = spec or get_spec(name)
    if not spec.url:
        raise DatasetError(f"no download URL is known for {spec.name}: {spec.source}")
    root = data_root(data_dir)[0]
    target = root / spec.name
    if target.exists():
        if not verify_folder(target, spec):
            return target, False
        if not force:
            raise DatasetExistsError(f"{target} exists but does not match {spec.name}'s checksums")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=root))
    try:
        archive = fetch(spec.url, staging / "archive", console, timeout)
        unpacked = staging / spec.name
        files = extract_images(archive, unpacked, spec)
        if not files:
            raise DatasetError(f"{spec.url}: the archive holds no {spec.ext} images of {spec.name}"
                               + (f" under {spec.member_dir}/" if spec.member_dir else ""))
        problems = verify_folder(unpacked, spec)
        if problems:
            raise DatasetError(f"{spec.name} from {spec.url}: {problems[0]}"
                               + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
                               + "; nothing installed")
        if target.exists():
            os.replace(target, staging / "previous")
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True
