"""Tests for insitu.data: IDX reading, dataset search order, loading, subsets, downloads.

Real MNIST / Fashion-MNIST are read from the shared read-only folder beside the
repository (``<repo>/../shared/datasets``). Downloads are tested only against a
local ``http.server`` on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from insitu import data
from insitu.data import (
    DATASETS,
    Dataset,
    DatasetError,
    download_dataset,
    find_dataset_dir,
    load_dataset,
    read_idx,
)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (1-D labels or 3-D images) as IDX bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_fake_dataset(folder: Path, n_train=6, n_test=3, side=4, gz=True, fill=0) -> Path:
    """Write a tiny valid IDX dataset; ``fill`` tags it so tests can tell copies apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(fill)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        images[:, 0, 0] = fill
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


def tag(ds: Dataset) -> int:
    """Recover the ``fill`` tag written by make_fake_dataset."""
    return round(float(ds.train_x[0, 0]) * 255)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """Isolate the search: empty HOME, no XDG_CACHE_HOME / INSITU_DATA, fake system dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("INSITU_DATA", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


@pytest.fixture(scope="module")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.fail(
            f"real datasets not found at {SHARED_DATASETS} (expected mnist/ and "
            "fashion-mnist/ there; the repository must be cloned beside shared/)"
        )
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def mnist(shared_datasets) -> Dataset:
    return load_dataset("mnist", shared_datasets)


# --------------------------------------------------------------------------- real data


def test_mnist_real(mnist, shared_datasets):
    assert mnist.name == "mnist"
    assert mnist.train_x.shape == (60000, 784) and mnist.test_x.shape == (10000, 784)
    assert mnist.train_y.shape == (60000,) and mnist.test_y.shape == (10000,)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert float(mnist.train_x.min()) == 0.0 and float(mnist.train_x.max()) == 1.0
    assert 0.0 <= float(mnist.test_x.min()) and float(mnist.test_x.max()) <= 1.0
    for y in (mnist.train_y, mnist.test_y):
        assert int(y.min()) == 0 and int(y.max()) == 9
    assert int(mnist.train_y[0]) == 5
    assert mnist.image_shape == (1, 28, 28) and mnist.num_classes == 10
    assert mnist.input_dim == 784
    assert Path(mnist.source) == (shared_datasets / "mnist").resolve()


def test_fashion_mnist_real_and_fast(shared_datasets):
    import time

    start = time.perf_counter()
    ds = load_dataset("fashion-mnist", shared_datasets / "fashion-mnist")
    elapsed = time.perf_counter() - start
    assert ds.train_x.shape == (60000, 784) and ds.test_x.shape == (10000, 784)
    assert ds.train_y.dtype == torch.int64 and set(ds.test_y.unique().tolist()) == set(range(10))
    assert elapsed < 5.0, f"decoding Fashion-MNIST took {elapsed:.2f} s"


# --------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    labels = np.array([7, 0, 255], dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / f"img{suffix}", images))
    got_labels = read_idx(write_idx(tmp_path / f"lab{suffix}", labels))
    assert got_images.dtype == np.uint8 and got_images.shape == (2, 3, 5)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 1234, 1) + b"\x00"))
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)
    with pytest.raises(DatasetError, match="expected 2051"):
        read_idx(write_idx(tmp_path / "lab", np.zeros(3, np.uint8)), expected_magic=2051)


def test_read_idx_truncated(tmp_path):
    raw = idx_bytes(np.ones((4, 2, 2), np.uint8))
    plain = tmp_path / "short"
    plain.write_bytes(raw[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(plain)
    header_only = tmp_path / "hdr"
    header_only.write_bytes(raw[:6])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(header_only)
    cut_gzip = tmp_path / "cut.gz"
    cut_gzip.write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(cut_gzip)
    extra = tmp_path / "extra"
    extra.write_bytes(raw + b"\x00")
    with pytest.raises(DatasetError, match="oversized"):
        read_idx(extra)


# --------------------------------------------------------------------------- search order


def test_search_order(clean_env, monkeypatch):
    tmp = clean_env
    explicit = make_fake_dataset(tmp / "explicit" / "mnist", fill=1)
    env_root = tmp / "envdata"
    make_fake_dataset(env_root / "mnist", fill=2, gz=False)
    cache = make_fake_dataset(tmp / "home" / ".cache" / "insitu" / "datasets" / "mnist", fill=3)
    system = make_fake_dataset(tmp / "system" / "mnist", fill=4)
    monkeypatch.setenv("INSITU_DATA", str(env_root))

    # explicit path (parent form and folder form) beats INSITU_DATA
    assert find_dataset_dir("mnist", tmp / "explicit") == explicit.resolve()
    assert find_dataset_dir("mnist", explicit) == explicit.resolve()
    assert tag(load_dataset("mnist", tmp / "explicit")) == 1
    # INSITU_DATA (parent form, plain files) beats the cache
    assert find_dataset_dir("mnist") == (env_root / "mnist").resolve()
    assert tag(load_dataset("mnist")) == 2
    monkeypatch.setenv("INSITU_DATA", str(env_root / "mnist"))  # folder form
    assert find_dataset_dir("mnist") == (env_root / "mnist").resolve()
    # the cache (~/.cache when XDG_CACHE_HOME is unset) beats the system folder
    monkeypatch.delenv("INSITU_DATA")
    assert find_dataset_dir("mnist") == cache.resolve()
    xdg_cache = make_fake_dataset(tmp / "xdg" / "insitu" / "datasets" / "mnist", fill=5)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    assert find_dataset_dir("mnist") == xdg_cache.resolve()
    assert tag(load_dataset("mnist")) == 5
    # the system folder is the last resort
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "empty-xdg"))
    assert find_dataset_dir("mnist") == system.resolve()


def test_not_found_lists_every_place(clean_env, monkeypatch):
    tmp = clean_env
    monkeypatch.setenv("INSITU_DATA", str(tmp / "envdata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    for place in (
        tmp / "envdata",
        tmp / "envdata" / "fashion-mnist",
        tmp / "xdg" / "insitu" / "datasets" / "fashion-mnist",
        tmp / "system" / "fashion-mnist",
    ):
        assert str(place) in msg
    assert "--data-dir" in msg and "INSITU_DATA" in msg and "download" in msg


def test_explicit_path_missing_files_is_specific(clean_env):
    folder = make_fake_dataset(clean_env / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    # a complete copy elsewhere must not be used silently instead of the given folder
    make_fake_dataset(clean_env / "home" / ".cache" / "insitu" / "datasets" / "mnist")
    with pytest.raises(DatasetError) as info:
        find_dataset_dir("mnist", folder)
    msg = str(info.value)
    assert str(folder) in msg and "t10k-labels-idx1-ubyte" in msg
    folder_line = next(line for line in msg.splitlines() if line.strip().startswith(f"{folder}:"))
    assert "missing t10k-labels-idx1-ubyte[.gz]" in folder_line
    assert "train-images" not in folder_line  # only the file that is actually missing


def test_unknown_name_suggests_closest():
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnst")
    msg = str(info.value)
    assert "'fashion-mnist'" in msg and all(name in msg for name in DATASETS)
    assert load_dataset("Digits").name == "digits"  # case and "_" / "-" are normalised
    assert data._canonical_name("Fashion_MNIST") == "fashion-mnist"


# --------------------------------------------------------------------------- digits, subset


def test_digits():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1437, 64) and ds.test_x.shape == (360, 64)
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 1797
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert float(ds.train_x.min()) >= 0.0 and float(ds.train_x.max()) == 1.0
    assert ds.image_shape == (1, 8, 8) and ds.num_classes == 10
    again = load_dataset("digits")  # deterministic split
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)


def test_subset_seeded():
    full = load_dataset("digits")
    a = load_dataset("digits", subset=100, seed=7)
    b = load_dataset("digits", subset=100, seed=7)
    c = load_dataset("digits", subset=100, seed=8)
    assert a.train_x.shape == (100, 64) and a.train_y.shape == (100,)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert torch.equal(a.test_x, full.test_x)  # test set kept whole
    # every subset row is a row of the full training set
    dists = torch.cdist(a.train_x, full.train_x).min(dim=1).values
    assert float(dists.max()) == 0.0
    state = torch.get_rng_state()
    load_dataset("digits", subset=10, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


@pytest.mark.parametrize("bad", [0, -5, 1438, 2.5, True])
def test_subset_invalid(bad):
    with pytest.raises(DatasetError, match="subset"):
        load_dataset("digits", subset=bad)


def test_subset_fake_idx(clean_env):
    folder = make_fake_dataset(clean_env / "fake", n_train=8, n_test=3)
    ds = load_dataset("mnist", folder, subset=5, seed=3)
    assert ds.train_x.shape == (5, 16) and ds.test_x.shape == (3, 16)
    assert ds.image_shape == (1, 4, 4)
    with pytest.raises(DatasetError, match="between 1 and .*8"):
        load_dataset("mnist", folder, subset=9)


# --------------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (folder, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_falls_back_to_second_mirror(http_root, tmp_path):
    root, base = http_root
    make_fake_dataset(root / "good", fill=9)
    dest = tmp_path / "dest"
    out = download_dataset("mnist", dest, mirrors=[base + "missing/", base + "good"], timeout=5)
    assert out == dest.resolve()
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)
    assert tag(load_dataset("mnist", dest)) == 9


def test_download_rejects_corrupt_file(http_root, tmp_path):
    root, base = http_root
    bad = make_fake_dataset(root / "bad")
    (bad / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 9999, 1, 1, 1) + b"\x00")
    )
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError) as info:
        download_dataset("mnist", dest, mirrors=[base + "missing/", base + "bad/"], timeout=5)
    msg = str(info.value)
    assert base + "missing/" in msg and base + "bad/" in msg and "magic" in msg and "404" in msg
    assert list(dest.iterdir()) == []  # no corrupt file, no leftover temp file

    # a good later mirror replaces the corrupt one; nothing is left over
    make_fake_dataset(root / "good", fill=4)
    download_dataset("mnist", dest, mirrors=[base + "bad/", base + "good/"], timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)
    assert tag(load_dataset("mnist", dest)) == 4


def test_load_with_download_goes_to_cache(http_root, clean_env, monkeypatch):
    root, base = http_root
    make_fake_dataset(root / "mirror", fill=6)
    monkeypatch.setitem(data.DEFAULT_MIRRORS, "fashion-mnist", (base + "mirror/",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    readonly = clean_env / "readonly"
    readonly.mkdir()
    ds = load_dataset("fashion-mnist", path=readonly, download=True)
    assert tag(ds) == 6
    cache = clean_env / "xdg" / "insitu" / "datasets" / "fashion-mnist"
    assert Path(ds.source) == cache.resolve()
    assert list(readonly.iterdir()) == []  # never writes into the user's data folder
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        download_dataset("digits", clean_env / "x")
