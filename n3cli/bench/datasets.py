"""The registry of standard test sets and where their images are found on this machine.

Each set is one folder of images named after the set (``<data root>/Set12/01.png`` ...). The data
root is, in this order: ``--data-dir DIR``, the environment variable ``N3_DATA``, else a per-user
cache folder (``platformdirs.user_cache_dir("n3")/datasets``). ``--dataset`` also accepts the path
of any existing folder of images (then named after the folder, without paper figures).

Real-pairs sets (task ``real``, e.g. PolyU-val) hold noisy/clean photo pairs named ``<stem>_real.EXT`` (noisy)
and ``<stem>_mean.EXT`` (clean), matched by :func:`real_pairs`. Such a set's ``files`` are the noisy files of
its pairs (one per pair, so counts and ``--limit`` are in pairs); :func:`clean_partner` names each one's clean
file. A plain folder is read as pairs when resolved for task ``real``.

Checksums (sha256 per file, ``checksums.json``) were computed from the copies the project
measured with; ``n3 data download`` verifies every file against them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import N3Error, OutputExistsError
from ..imaging.io import FORMAT_OF_EXTENSION

ENV_DATA = "N3_DATA"
TASKS = ("denoise", "sr", "real")
#: How the noisy and the clean file of a real pair are named: ``<stem>_real.EXT`` and ``<stem>_mean.EXT``.
NOISY_SUFFIX, CLEAN_SUFFIX = "_real", "_mean"


class DatasetError(N3Error):
    """A test set is unknown, missing or incomplete."""


class DatasetMissingError(DatasetError):
    """A registered set is not under the data root (another root, ``data_dir``, may hold it)."""

    about = "data_dir"


class DatasetExistsError(DatasetError, OutputExistsError):
    """A set's folder exists but fails verification, and replacing it was not asked for (``force=False``)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One standard test set: what it holds and where a copy can be fetched."""

    name: str
    tasks: tuple[str, ...]
    color: bool  # RGB images (False: gray)
    count: int
    ext: str = ".png"
    url: str | None = None  # an archive (zip or tar) holding the images
    member_dir: str | None = None  # the folder inside the archive (matched at its end, any top folder)
    source: str = ""  # where the URL (or the set) comes from
    denoise_gray: bool | None = None  # denoising reads it gray (None: gray exactly when not ``color``)
    sha256: dict[str, str] | None = field(default=None, compare=False, hash=False)  # overrides checksums.json

    @property
    def gray_for_denoise(self) -> bool:
        return (not self.color) if self.denoise_gray is None else self.denoise_gray

    @property
    def checksums(self) -> dict[str, str]:
        return self.sha256 if self.sha256 is not None else checksums().get(self.name, {})

    @property
    def kind(self) -> str:
        return "RGB" if self.color else "gray"

    @property
    def paired(self) -> bool:
        """A set of real noisy/clean pairs (its ``count`` counts pairs)."""
        return "real" in self.tasks


def _gh(repo: str) -> str:
    """The archive of a GitHub repository's default branch."""
    return f"https://github.com/{repo}/archive/HEAD.zip"


REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("Set12", ("denoise",), False, 12, url=_gh("cszn/DnCNN"), member_dir="testsets/Set12",
                source="DnCNN repository (github.com/cszn/DnCNN), testsets/Set12"),
    DatasetSpec("BSD68", ("denoise",), False, 68, url=_gh("cszn/DnCNN"), member_dir="testsets/BSD68",
                source="DnCNN repository (github.com/cszn/DnCNN), testsets/BSD68"),
    DatasetSpec("Urban100", ("denoise", "sr"), True, 100, denoise_gray=True,
                source="no vouched archive URL (Huang et al. 2015); put the 100 HR PNGs in <data root>/Urban100"),
    DatasetSpec("CBSD68", ("denoise",), True, 68, url=_gh("cszn/IRCNN"), member_dir="testsets/CBSD68",
                source="IRCNN repository (github.com/cszn/IRCNN), testsets/CBSD68"),
    DatasetSpec("Kodak24", ("denoise",), True, 24, url=_gh("cszn/FFDNet"), member_dir="testsets/Kodak24",
                source="FFDNet repository (github.com/cszn/FFDNet), testsets/Kodak24"),
    DatasetSpec("Set5", ("sr",), True, 5, url=_gh("JingyunLiang/SwinIR"), member_dir="testsets/Set5/HR",
                source="SwinIR repository (github.com/JingyunLiang/SwinIR), testsets/Set5/HR"),
    DatasetSpec("Set14", ("sr",), True, 14, url=_gh("majedelhelou/denoising_datasets"), member_dir="Set14",
                source="denoising_datasets collection (github.com/majedelhelou/denoising_datasets), Set14"),
    DatasetSpec("BSD100", ("sr",), True, 100,
                source="no vouched archive URL (BSD500 validation set); put the 100 HR PNGs in <data root>/BSD100"),
    DatasetSpec("PolyU-val", ("real",), True, 22, ext=".jpg",
                source="PolyU real-world noisy image dataset (Xu et al. 2018), 22 crops; no vouched archive URL: "
                       "put the pairs (*_real.JPG noisy, *_mean.JPG clean) in <data root>/PolyU-val"),
]}


@lru_cache(maxsize=1)
def checksums() -> dict[str, dict[str, str]]:
    """``{set name: {file name: sha256}}`` shipped with the package."""
    text = resources.files("n3cli.bench").joinpath("checksums.json").read_text()
    return json.loads(text)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compute_checksums(folder: Path, ext: str | None = None) -> dict[str, str]:
    """sha256 of every image file in ``folder`` (to extend ``checksums.json``)."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir())
            if p.is_file() and (p.suffix.lower() == ext if ext else p.suffix.lower() in FORMAT_OF_EXTENSION)}


def lookup(name: str) -> DatasetSpec | None:
    """The registry entry of a set name (case-insensitive), or None."""
    if name in REGISTRY:
        return REGISTRY[name]
    for key, spec in REGISTRY.items():
        if key.lower() == name.lower():
            return spec
    return None


def get_spec(name: str) -> DatasetSpec:
    spec = lookup(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(REGISTRY)})")
    return spec


def default_cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("n3")) / "datasets"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The data root and where it came from: ``data_dir`` (given), ``N3_DATA`` or the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir"
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser(), ENV_DATA
    return default_cache_root(), "cache"


def image_files(folder: Path, ext: str | None = None) -> list[Path]:
    """Image files of a folder, sorted by name (hidden files skipped)."""
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and (p.suffix.lower() == ext if ext else p.suffix.lower() in FORMAT_OF_EXTENSION)),
                  key=lambda p: p.name)


def clean_partner(noisy: Path) -> Path | None:
    """The clean file of a real pair's noisy file (``x_real.JPG`` → ``x_mean.JPG``, same extension), or None
    when ``noisy`` is not named ``*_real.EXT`` or its partner is not a file."""
    if not noisy.stem.endswith(NOISY_SUFFIX):
        return None
    clean = noisy.with_name(noisy.stem[: -len(NOISY_SUFFIX)] + CLEAN_SUFFIX + noisy.suffix)
    return clean if clean.is_file() else None


def real_pairs(folder: Path, ext: str | None = None) -> list[tuple[Path, Path]]:
    """(noisy, clean) files of the real pairs in a folder, sorted by the noisy file's name; a ``*_real`` file
    without its ``*_mean`` partner is ignored."""
    pairs = []
    for noisy in image_files(Path(folder), ext):
        clean = clean_partner(noisy)
        if clean is not None:
            pairs.append((noisy, clean))
    return pairs


def set_files(folder: Path, spec: DatasetSpec) -> list[Path]:
    """A registered set's files in a folder: its images, or for a real-pairs set the noisy file of each pair."""
    return [noisy for noisy, _ in real_pairs(folder, spec.ext)] if spec.paired else image_files(folder, spec.ext)


@dataclass
class Dataset:
    """A resolved test set: its name, registry entry (None for a plain folder) and image files (for real pairs:
    the noisy file of each pair, see :func:`clean_partner`)."""

    name: str
    folder: Path
    files: list[Path]
    spec: DatasetSpec | None = None
    warning: str | None = None

    @property
    def complete(self) -> bool:
        return self.spec is not None and len(self.files) == self.spec.count


def local_folder(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Where a registered set is present under the data root, or None."""
    folder = data_root(data_dir)[0] / spec.name
    return folder if folder.is_dir() and set_files(folder, spec) else None


def _missing(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> DatasetError:
    root, origin = data_root(data_dir)
    what = f"{spec.count} noisy/clean pairs" if spec.paired else f"{spec.count} images"
    how = (f"run `n3 data download {spec.name}`" if spec.url else
           f"put its {what} in {root / spec.name} (no download URL is known)")
    return DatasetMissingError(f"dataset {spec.name} not found in {root} (data root from {origin}); {how}, "
                               f"or give a data root that holds {spec.name}/")


def _matching_spec(name: str, files: list[Path]) -> DatasetSpec | None:
    """The registered set a folder is a full copy of (same name and files), else None."""
    spec = lookup(name)
    if spec is None:
        return None
    names = {f.name for f in files}
    return spec if (set(spec.checksums) == names if spec.checksums else len(names) == spec.count) else None


def resolve_dataset(name_or_path: str, data_dir: str | os.PathLike[str] | None = None,
                    task: str | None = None) -> Dataset:
    """A registered set name (looked up under the data root) or the path of a folder of images.

    A bare registered name always means the registered set; anything else must be an existing folder
    (a folder named like a registered set and holding exactly its files counts as that set). For ``task``
    ``"real"`` (and for real-pairs sets) the files are the noisy files of the folder's ``*_real``/``*_mean``
    pairs; a folder without pairs is an error.
    """
    spec = lookup(name_or_path)
    bare = os.sep not in name_or_path and "/" not in name_or_path
    if spec is not None and bare:
        folder = data_root(data_dir)[0] / spec.name
        if not folder.is_dir():
            raise _missing(spec, data_dir)
        if task == "real" and not spec.paired:
            return _paired(spec.name, folder, None)
        files = set_files(folder, spec)
        if not files:
            raise _missing(spec, data_dir)
        warning = None
        if len(files) != spec.count:
            what = "noisy/clean pairs" if spec.paired else "images"
            warning = f"{folder}: {len(files)} {what}, expected {spec.count} (incomplete copy?)"
        return Dataset(spec.name, folder, files, spec, warning)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        name = path.resolve().name
        named = lookup(name)
        if task == "real" or (named is not None and named.paired):
            return _paired(name, path, named if named is not None and named.paired else None)
        files = image_files(path)
        if not files:
            raise DatasetError(f"{path}: folder contains no images")
        return Dataset(name, path, files, _matching_spec(name, files))
    if path.exists():
        raise DatasetError(f"dataset {name_or_path}: not a folder")
    raise DatasetError(f"unknown dataset {name_or_path!r}: not a folder and not one of {', '.join(REGISTRY)}")


def _paired(name: str, folder: Path, spec: DatasetSpec | None) -> Dataset:
    """A folder read as real pairs (``spec``: the real-pairs set it may be a full copy of)."""
    files = [noisy for noisy, _ in real_pairs(folder)]
    if not files:
        raise DatasetError(f"no *{NOISY_SUFFIX}/*{CLEAN_SUFFIX} pairs in {folder}")
    return Dataset(name, folder, files, spec if spec is not None and len(files) == spec.count else None)
