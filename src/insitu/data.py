"""Datasets for the training simulators.

Three datasets are supported (see :data:`DATASETS`):

``"mnist"`` and ``"fashion-mnist"``
    Read from the standard IDX files (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each either plain or gzipped with ``.gz``).
    60,000 training and 10,000 test images of 28x28 pixels, 10 classes.
``"digits"``
    scikit-learn's bundled 8x8 handwritten digits (1,797 images), usable fully
    offline. scikit-learn is imported only when this dataset is loaded.

Everything is returned as a :class:`Dataset` holding torch tensors in memory:
images flattened to ``(N, D)`` float32 in ``[0, 1]`` and labels int64 ``(N,)``.

Where the IDX files are looked for is described in :func:`find_dataset_dir`;
:func:`download_dataset` fetches them from public mirrors when online.
This module imports only the standard library, numpy and torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import gzip
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DEFAULT_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "IDX_FILES",
    "MNIST_MIRRORS",
    "SYSTEM_DATA_DIR",
    "download_dataset",
    "find_dataset_dir",
    "load_dataset",
    "read_idx",
    "user_cache_dir",
]

log = logging.getLogger(__name__)

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist", "fashion-mnist", "digits")

#: The IDX-backed datasets (the ones that live in a folder).
IDX_DATASETS = ("mnist", "fashion-mnist")

#: Standard IDX file names (without ``.gz``), keyed by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: IDX magic numbers: unsigned-byte data with 3 dimensions (images) or 1 (labels).
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

#: Default mirror base URLs; each file is fetched as ``base + name + ".gz"``.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
DEFAULT_MIRRORS = {"mnist": MNIST_MIRRORS, "fashion-mnist": FASHION_MNIST_MIRRORS}

#: System-wide location searched last (e.g. Debian's ``dataset-fashion-mnist``).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

#: Environment variable naming a data folder (the dataset folder or its parent).
ENV_VAR = "INSITU_DATA"

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class DatasetError(RuntimeError):
    """A dataset could not be found, read, validated or downloaded.

    Also raised for invalid arguments (unknown dataset name, bad ``subset``),
    so a command-line front end can catch this one type and print its message.
    """


@dataclass
class Dataset:
    """A train/test split held in memory as torch tensors.

    Attributes:
        name: dataset name, one of :data:`DATASETS`.
        train_x: float32 ``(N_train, D)``, flattened images scaled to ``[0, 1]``
            (``D = C * H * W``, e.g. 784 for MNIST, 64 for digits).
        train_y: int64 ``(N_train,)`` class labels in ``[0, num_classes)``.
        test_x: float32 ``(N_test, D)``.
        test_y: int64 ``(N_test,)``.
        image_shape: ``(channels, height, width)``, e.g. ``(1, 28, 28)``;
            ``train_x.view(-1, *image_shape)`` recovers the images.
        num_classes: number of classes (10 for all bundled datasets).
        source: folder or description of where the data was loaded from.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    image_shape: tuple[int, int, int]
    num_classes: int
    source: str

    @property
    def input_dim(self) -> int:
        """Number of features per sample, ``D = prod(image_shape)``."""
        return int(math.prod(self.image_shape))

    @property
    def n_train(self) -> int:
        """Number of training samples ``N_train``."""
        return int(self.train_x.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples ``N_test``."""
        return int(self.test_x.shape[0])


# --------------------------------------------------------------------------- names


def _canonical_name(name: str) -> str:
    """Normalise ``name`` (case, ``_`` vs ``-``) or raise DatasetError for unknown names."""
    if not isinstance(name, str):
        raise DatasetError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key in ("fashionmnist", "fmnist"):
        key = "fashion-mnist"
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, DATASETS, n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DatasetError(
        f"unknown dataset {name!r}; valid names are {', '.join(DATASETS)}.{hint}"
    )


# --------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) contents of ``path``; gzip is detected by its magic bytes."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"corrupt or truncated gzip file {path}: {exc}; delete it and fetch it again"
            ) from exc
    if path.suffix == ".gz":
        raise DatasetError(f"{path} has a .gz suffix but is not gzip-compressed")
    return raw


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a numpy array.

    Only the two unsigned-byte layouts used by (Fashion-)MNIST are accepted:

    * magic 2051 (images): header ``count, rows, cols`` -> uint8 ``(count, rows, cols)``
    * magic 2049 (labels): header ``count``             -> uint8 ``(count,)``

    Args:
        path: file to read. Gzip compression is detected from the content (the
            ``1f 8b`` magic), so a ``.gz`` suffix is not required.
        expected_magic: if given (2051 or 2049), also require that magic number.

    Returns:
        A read-only view on the decoded bytes (``np.frombuffer``, no copy).

    Raises:
        DatasetError: unreadable file, bad magic number, truncated header or
            data, or trailing bytes (size not matching the header).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise DatasetError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected "
            f"{IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels). Not an (uncompressed "
            "or gzipped) MNIST-style IDX file."
        )
    if expected_magic is not None and magic != expected_magic:
        what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
        raise DatasetError(
            f"{path}: IDX magic {magic} ({what[magic]}) but expected {expected_magic} "
            f"({what.get(expected_magic, '?')})"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path}: truncated IDX header ({len(data)} bytes, need {header})"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "oversized"
        raise DatasetError(
            f"{path}: {kind} IDX file: header says shape {shape} "
            f"({expected - header} data bytes) but the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# --------------------------------------------------------------------------- search


def user_cache_dir(name: str | None = None) -> Path:
    """The per-user dataset cache: ``$XDG_CACHE_HOME/insitu/datasets[/<name>]``.

    Falls back to ``~/.cache`` when ``XDG_CACHE_HOME`` is unset, empty or relative.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    root = base / "insitu" / "datasets"
    return root / _canonical_name(name) if name is not None else root


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The existing file for ``stem`` in ``folder`` (plain preferred over ``.gz``), or None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(folder: Path) -> list[str]:
    """Standard IDX files absent from ``folder`` (all of them if it is not a directory)."""
    if not folder.is_dir():
        return list(IDX_FILES.values())
    return [stem for stem in IDX_FILES.values() if _idx_file(folder, stem) is None]


def _candidates(base: Path, name: str) -> list[Path]:
    """``base`` itself, then ``base/<name>`` (a parent folder holding the dataset)."""
    return [base, base / name]


def find_dataset_dir(name: str, path: str | os.PathLike | None = None) -> Path:
    """Locate the folder holding an IDX dataset.

    A folder holds the dataset if it contains the four standard files
    (see :data:`IDX_FILES`), each plain or ``.gz``. Searched in order:

    1. ``path`` if given: the dataset folder itself or a parent holding ``<name>/``.
       An explicit ``path`` is authoritative: if it does not hold the dataset a
       DatasetError lists the missing files (no silent fallback elsewhere);
    2. ``$INSITU_DATA`` (same two forms; several folders may be joined with
       ``os.pathsep``);
    3. the user cache, ``$XDG_CACHE_HOME/insitu/datasets/<name>`` (default
       ``~/.cache/insitu/datasets/<name>``), where downloads go;
    4. ``/usr/share/datasets/<name>`` (e.g. Debian's ``dataset-fashion-mnist``).

    For ``"digits"`` (bundled with scikit-learn) the scikit-learn data folder is
    returned.

    Raises:
        DatasetError: unknown name, or the dataset is in none of these places;
            the message lists every path tried and how to fix it.
    """
    name = _canonical_name(name)
    if name == "digits":
        return _sklearn_data_dir()

    if path is not None:
        base = Path(path).expanduser()
        tried = _candidates(base, name)
        for folder in tried:
            if not _missing_files(folder):
                return folder.resolve()
        details = []
        for folder in tried:
            if not folder.exists():
                details.append(f"  {folder}: does not exist")
            elif not folder.is_dir():
                details.append(f"  {folder}: not a folder")
            else:
                missing = ", ".join(f"{m}[.gz]" for m in _missing_files(folder))
                details.append(f"  {folder}: missing {missing}")
        raise DatasetError(
            f"the data folder given for {name!r} ({base}) does not hold the dataset:\n"
            + "\n".join(details)
            + f"\nPass the folder containing the four IDX files ({', '.join(IDX_FILES.values())},"
            f" plain or .gz) or its parent containing '{name}/'; or use download=True "
            "(CLI --download) to fetch it into the user cache when online."
        )

    tried: list[Path] = []
    env = os.environ.get(ENV_VAR, "")
    for entry in (e for e in env.split(os.pathsep) if e):
        tried.extend(_candidates(Path(entry).expanduser(), name))
    tried.append(user_cache_dir(name))
    tried.append(SYSTEM_DATA_DIR / name)
    for folder in tried:
        if not _missing_files(folder):
            return folder.resolve()

    places = "\n".join(f"  {folder}" for folder in tried)
    env_note = "" if env else f" (${ENV_VAR} is not set)"
    raise DatasetError(
        f"dataset {name!r} not found{env_note}. Looked for the four IDX files "
        f"({', '.join(IDX_FILES.values())}, plain or .gz) in:\n{places}\n"
        f"Fix: pass --data-dir PATH (path=...) or set {ENV_VAR}=PATH to a folder holding "
        f"them (or its parent containing '{name}/'), or, when online, use download=True "
        f"(CLI --download) to fetch them into {user_cache_dir(name)}."
    )


# --------------------------------------------------------------------------- loading


def _check_subset(subset: int | None, n: int) -> None:
    if subset is None:
        return
    if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)):
        raise DatasetError(f"subset must be a positive integer or None, got {subset!r}")
    if subset <= 0 or subset > n:
        raise DatasetError(
            f"subset must be between 1 and the number of training samples ({n}), got {subset}"
        )


def _apply_subset(ds: Dataset, subset: int | None, seed: int) -> Dataset:
    """Keep ``subset`` training samples chosen with a ``torch.Generator`` seeded by ``seed``.

    Returns a new :class:`Dataset` (``ds`` itself is left whole, so several subsets can be drawn
    from one loaded dataset).
    """
    _check_subset(subset, ds.n_train)
    if subset is None or subset == ds.n_train:
        return ds
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(ds.n_train, generator=gen)[: int(subset)].sort().values
    return dataclasses.replace(ds, train_x=ds.train_x[idx].contiguous(), train_y=ds.train_y[idx].contiguous())


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` -> float32 ``(N, H*W)`` in ``[0, 1]``."""
    # A 256-entry lookup table does the uint8 -> float32 conversion and scaling in a
    # single pass into one new array (same values as float32(v) / 255).
    lut = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(lut[images.reshape(images.shape[0], -1)])


def _load_idx_folder(name: str, folder: Path) -> Dataset:
    """Read the four IDX files of ``folder`` into a :class:`Dataset`."""
    arrays = {}
    for role, stem in IDX_FILES.items():
        file = _idx_file(folder, stem)
        if file is None:
            raise DatasetError(f"{folder}: missing {stem}[.gz]")
        magic = IMAGES_MAGIC if role.endswith("images") else LABELS_MAGIC
        arrays[role] = read_idx(file, expected_magic=magic)

    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{folder}: {split} set has {images.shape[0]} images but {labels.shape[0]} labels"
            )
    shape = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != shape:
        raise DatasetError(
            f"{folder}: train images are {shape} but test images are "
            f"{arrays['test_images'].shape[1:]}"
        )
    num_classes = 10
    for role in ("train_labels", "test_labels"):
        labels = arrays[role]
        if labels.size and int(labels.max()) >= num_classes:
            raise DatasetError(
                f"{folder}: {role} contains label {int(labels.max())} (expected 0..9)"
            )

    return Dataset(
        name=name,
        train_x=_images_to_tensor(arrays["train_images"]),
        train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_x=_images_to_tensor(arrays["test_images"]),
        test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        image_shape=(1, int(shape[0]), int(shape[1])),
        num_classes=num_classes,
        source=str(folder),
    )


def _import_sklearn_datasets():
    try:
        import sklearn
        import sklearn.datasets
    except ImportError as exc:
        raise DatasetError(
            "the 'digits' dataset is bundled with scikit-learn, which is not installed; "
            "run `pip install scikit-learn` (or `pip install insitu[digits]`), or use "
            "mnist / fashion-mnist instead"
        ) from exc
    return sklearn, sklearn.datasets


def _sklearn_data_dir() -> Path:
    _, skd = _import_sklearn_datasets()
    return Path(skd.__file__).resolve().parent / "data"


#: Fraction of the digits dataset held out as the test set.
DIGITS_TEST_FRACTION = 0.2
#: Fixed seed of the shuffle that splits digits into train/test (independent of ``seed``).
DIGITS_SPLIT_SEED = 0


def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits: 1,437 train / 360 test, pixels /16 -> ``[0, 1]``."""
    sklearn, skd = _import_sklearn_datasets()
    bunch = skd.load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / 16.0)  # (1797, 64)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))  # (1797,)
    n = x.shape[0]
    n_test = math.ceil(n * DIGITS_TEST_FRACTION)
    gen = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    perm = torch.randperm(n, generator=gen)
    train_idx, test_idx = perm[: n - n_test], perm[n - n_test :]
    return Dataset(
        name="digits",
        train_x=x[train_idx].contiguous(),
        train_y=y[train_idx].contiguous(),
        test_x=x[test_idx].contiguous(),
        test_y=y[test_idx].contiguous(),
        image_shape=(1, 8, 8),
        num_classes=10,
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
    )


def load_dataset(
    name: str,
    path: str | os.PathLike | None = None,
    download: bool = False,
    subset: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a dataset into memory.

    Args:
        name: one of :data:`DATASETS` (case-insensitive, ``_`` accepted for ``-``).
        path: folder holding the IDX files, or its parent holding ``<name>/``
            (see :func:`find_dataset_dir`); ignored for ``"digits"``.
        download: if the dataset is not found, download it into
            :func:`user_cache_dir` (never into ``path``) and load it from there.
        subset: keep only this many training samples, chosen at random with a
            ``torch.Generator`` seeded by ``seed`` (kept in original order);
            the test set is always complete. ``1 <= subset <= N_train``.
        seed: seed for ``subset`` (the global RNG is not touched).

    Returns:
        A :class:`Dataset`. MNIST / Fashion-MNIST: ``train_x`` float32
        ``(60000, 784)``, ``test_x`` ``(10000, 784)``, image_shape ``(1, 28, 28)``.
        Digits: ``(1437, 64)`` / ``(360, 64)``, image_shape ``(1, 8, 8)``
        (fixed split: last 20% of a shuffle with seed 0).

    Raises:
        DatasetError: unknown name, dataset not found (and ``download`` false or
            failing), corrupt files, bad ``subset``, or scikit-learn missing for digits.
    """
    name = _canonical_name(name)
    if subset is not None:
        _check_subset(subset, 1 << 62)  # type / sign check before any I/O
    if name == "digits":
        return _apply_subset(_load_digits(), subset, seed)

    try:
        folder = find_dataset_dir(name, path)
    except DatasetError as exc:
        if not download:
            raise
        dest = user_cache_dir(name)
        log.info("%s; downloading %s into %s", exc, name, dest)
        folder = download_dataset(name, dest)
    return _apply_subset(_load_idx_folder(name, folder), subset, seed)


# --------------------------------------------------------------------------- download


def _fetch_to(url: str, dest: Path, timeout: float, expected_magic: int) -> None:
    """Download ``url`` atomically to ``dest``: temp file beside it, validate, ``os.replace``."""
    request = urllib.request.Request(url, headers={"User-Agent": "insitu-dataset-fetch"})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
        read_idx(tmp, expected_magic=expected_magic)  # raises DatasetError if corrupt
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def download_dataset(
    name: str,
    dest_dir: str | os.PathLike,
    mirrors: list[str] | tuple[str, ...] | str | None = None,
    timeout: float = 30,
) -> Path:
    """Download the four gzipped IDX files of ``name`` into ``dest_dir``.

    Each file ``<stem>.gz`` is fetched from ``mirror + <stem>.gz``, trying the
    mirrors in order until one gives a file that parses as IDX with the right
    magic. Files are written atomically (temp file in ``dest_dir``, validated,
    then ``os.replace``), so an interrupted or corrupt download never leaves a
    bad file behind. Files already present in ``dest_dir`` that parse correctly
    are kept. Nothing outside ``dest_dir`` is written.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        dest_dir: destination folder (created if needed).
        mirrors: base URLs to try in order; default :data:`DEFAULT_MIRRORS`\\[name].
        timeout: per-request timeout in seconds for ``urllib.request.urlopen``.

    Returns:
        ``dest_dir`` as a resolved :class:`~pathlib.Path`.

    Raises:
        DatasetError: unknown or non-downloadable name, ``dest_dir`` not
            writable, or a file that no mirror could provide (the message names
            every mirror URL tried and its error).
    """
    name = _canonical_name(name)
    if name not in IDX_DATASETS:
        raise DatasetError(
            f"{name!r} cannot be downloaded; it is bundled with scikit-learn "
            "(`pip install scikit-learn`)"
        )
    if mirrors is None:
        mirrors = DEFAULT_MIRRORS[name]
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    if not mirrors:
        raise DatasetError("download_dataset needs at least one mirror URL")

    dest = Path(dest_dir).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create download folder {dest}: {exc}") from exc

    for role, stem in IDX_FILES.items():
        magic = IMAGES_MAGIC if role.endswith("images") else LABELS_MAGIC
        target = dest / f"{stem}.gz"
        if target.is_file():
            try:
                read_idx(target, expected_magic=magic)
                log.info("%s already present, keeping it", target)
                continue
            except DatasetError as exc:
                log.warning("replacing invalid %s: %s", target, exc)
        errors = []
        for base in mirrors:
            url = base + target.name
            log.info("downloading %s", url)
            try:
                _fetch_to(url, target, timeout, magic)
                break
            except (urllib.error.URLError, OSError, ValueError, DatasetError) as exc:
                # URLError/HTTPError are OSError subclasses; ValueError: malformed URL.
                errors.append(f"  {url}: {exc}")
        else:
            raise DatasetError(
                f"could not download {target.name} for {name!r} from any of the "
                f"{len(mirrors)} mirror(s) ({', '.join(mirrors)}):\n"
                + "\n".join(errors)
                + f"\nIf offline, copy the four IDX files into {dest} or pass --data-dir / "
                f"set {ENV_VAR}."
            )
    return dest.resolve()
