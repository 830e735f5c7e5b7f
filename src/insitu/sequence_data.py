"""Sequence tasks built from the image datasets of :mod:`insitu.data`.

``sequential MNIST``
    Each 28x28 image read row by row: a sequence of 28 time steps of 28 features (the pixels of
    one row), classified after the last step.
``permuted sequential MNIST``
    The 784 pixels in a fixed random order (one permutation, drawn from a generator seeded with
    ``permutation_seed``, for every image of train and test), read ``pixels_per_step`` at a time:
    784 steps of 1 pixel by default (Le, Jaitly & Hinton 2015), or e.g. 196 steps of 4. The
    permutation destroys the images' local structure, so the network has to carry information
    over hundreds of steps.

``character-level text`` (:func:`char_corpus`)
    Windows of a text as sequences of character indices, the target of each step the next
    character. The bundled text is Jane Austen's *Pride and Prejudice* (public domain; see
    ``src/insitu/texts/README.md``), read from the package: nothing is downloaded.

The image tasks are returned as a :class:`SequenceDataset` in batch-first layout ``(N, T, F)``, ready for
``AnalogLSTM(..., batch_first=True)`` (or ``nn.LSTM``). Only the standard library, numpy and
torch are used; the images are read by :func:`insitu.data.load_dataset` (no download unless asked).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import torch

from .data import Dataset, DatasetError, load_dataset

__all__ = ["SequenceDataset", "pixel_permutation", "row_sequences", "pixel_sequences", "load_sequential_mnist",
           "CharCorpus", "char_corpus", "BUNDLED_TEXT"]


@dataclasses.dataclass
class SequenceDataset:
    """A sequence-classification split held in memory.

    Attributes:
        name: e.g. ``"sequential-mnist"`` or ``"permuted-mnist"``.
        train_x: float32 ``(N_train, T, F)`` (batch first), values in ``[0, 1]``.
        train_y: int64 ``(N_train,)``.
        test_x: float32 ``(N_test, T, F)``.
        test_y: int64 ``(N_test,)``.
        num_classes: number of classes.
        permutation: the pixel order ``(H·W,)`` applied before cutting into steps, or ``None``.
        source: where the images were read from.
    """

    name: str
    train_x: torch.Tensor = dataclasses.field(repr=False)
    train_y: torch.Tensor = dataclasses.field(repr=False)
    test_x: torch.Tensor = dataclasses.field(repr=False)
    test_y: torch.Tensor = dataclasses.field(repr=False)
    num_classes: int
    permutation: torch.Tensor | None = dataclasses.field(repr=False)
    source: str

    @property
    def steps(self) -> int:
        """Sequence length ``T``."""
        return int(self.train_x.shape[1])

    @property
    def features(self) -> int:
        """Features per time step ``F``."""
        return int(self.train_x.shape[2])


def pixel_permutation(n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random order of ``n`` pixels (int64 ``(n,)``) from a generator seeded with ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def row_sequences(x: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Flattened images ``(N, C·H·W)`` -> row sequences ``(N, H, C·W)`` (step ``t`` is row ``t``;
    with several channels a step holds the row of every channel)."""
    c, h, w = image_shape
    if x.dim() != 2 or x.shape[1] != c * h * w:
        raise ValueError(f"row_sequences: expected flattened images (N, {c * h * w}) for image_shape {image_shape}, got {tuple(x.shape)}.")
    return x.reshape(-1, c, h, w).permute(0, 2, 1, 3).reshape(-1, h, c * w)


def pixel_sequences(x: torch.Tensor, pixels_per_step: int = 1, permutation: torch.Tensor | None = None) -> torch.Tensor:
    """Flattened images ``(N, D)`` -> pixel sequences ``(N, D / k, k)`` with ``k = pixels_per_step``,
    the pixels first reordered by ``permutation`` ``(D,)`` if given."""
    if x.dim() != 2:
        raise ValueError(f"pixel_sequences: expected flattened images (N, D), got shape {tuple(x.shape)}.")
    d = x.shape[1]
    if isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, int) or pixels_per_step < 1 or d % pixels_per_step:
        divisors = [k for k in range(1, min(d, 64) + 1) if d % k == 0]
        raise ValueError(f"pixels_per_step must be a positive divisor of the {d} pixels (e.g. {divisors}), got {pixels_per_step!r}.")
    if permutation is not None:
        if tuple(permutation.shape) != (d,) or not torch.equal(permutation.sort().values, torch.arange(d)):
            raise ValueError(f"pixel_sequences: permutation must be a permutation of range({d}), e.g. pixel_permutation({d}, seed).")
        x = x[:, permutation]
    return x.reshape(x.shape[0], d // pixels_per_step, pixels_per_step)


def load_sequential_mnist(
    path: str | os.PathLike | None = None,
    *,
    permuted: bool = False,
    pixels_per_step: int = 1,
    permutation_seed: int = 0,
    subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    name: str = "mnist",
    download: bool = False,
) -> SequenceDataset:
    """Sequential MNIST (rows as steps: ``T = 28``, ``F = 28``) or, with ``permuted=True``, permuted
    pixel MNIST (``T = 784 / pixels_per_step``, ``F = pixels_per_step``).

    Args:
        path, download, subset, seed, name: passed to :func:`insitu.data.load_dataset` (``name``
            ``"fashion-mnist"`` gives the same tasks on Fashion-MNIST).
        permuted: pixel sequences in a fixed random order instead of rows.
        pixels_per_step: pixels per time step of the permuted task (a divisor of 784).
        permutation_seed: seed of the pixel order (the same for train and test).
        test_subset: keep only the first this many test images (the test set is complete by default).

    Raises:
        DatasetError: as :func:`~insitu.data.load_dataset`; ``test_subset`` out of range.
        ValueError: ``pixels_per_step`` does not divide the number of pixels.
    """
    data: Dataset = load_dataset(name, path=path, download=download, subset=subset, seed=seed)
    test_x, test_y = data.test_x, data.test_y
    if test_subset is not None:
        if isinstance(test_subset, bool) or not isinstance(test_subset, int) or not 1 <= test_subset <= data.n_test:
            raise DatasetError(f"test_subset must be an integer between 1 and {data.n_test}, got {test_subset!r}.")
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]
    if permuted:
        perm = pixel_permutation(data.input_dim, permutation_seed)
        train_x = pixel_sequences(data.train_x, pixels_per_step, perm)
        test_x = pixel_sequences(test_x, pixels_per_step, perm)
        label = "permuted-" + data.name
    else:
        perm = None
        train_x = row_sequences(data.train_x, data.image_shape)
        test_x = row_sequences(test_x, data.image_shape)
        label = "sequential-" + data.name
    return SequenceDataset(label, train_x, data.train_y, test_x, test_y, data.num_classes, perm, data.source)


#: The public-domain text bundled with the package (Jane Austen, *Pride and Prejudice*, 1813).
BUNDLED_TEXT = Path(__file__).parent / "texts" / "pride_and_prejudice.txt.gz"


@dataclasses.dataclass
class CharCorpus:
    """A text cut into windows for next-character prediction.

    Attributes:
        name: ``"char-<file stem>"``, e.g. ``"char-pride_and_prejudice"``.
        train_x: int64 ``(N_train, T)``: character indices of the windows (batch first).
        train_y: int64 ``(N_train, T)``: the next character of every position
            (``train_y[:, t]`` is the character after ``train_x[:, t]``).
        test_x, test_y: the same for the test windows (taken from the end of the text).
        vocab: the characters, ``vocab[i]`` is index ``i`` (sorted; those of the whole text).
        source: the file the text was read from.
        train_chars, test_chars: characters of the text in each part.
    """

    name: str
    train_x: torch.Tensor = dataclasses.field(repr=False)
    train_y: torch.Tensor = dataclasses.field(repr=False)
    test_x: torch.Tensor = dataclasses.field(repr=False)
    test_y: torch.Tensor = dataclasses.field(repr=False)
    vocab: str = dataclasses.field(repr=False)
    source: str
    train_chars: int = 0
    test_chars: int = 0

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def steps(self) -> int:
        """Window length ``T``."""
        return int(self.train_x.shape[1])

    def decode(self, indices) -> str:
        """The text of a sequence of character indices."""
        return "".join(self.vocab[int(i)] for i in indices)


def _read_text(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read the text {path}: {exc.strerror or exc}.") from None
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text.") from None


def _windows(codes: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``seq_len`` inputs, each with its ``seq_len`` next characters."""
    n = (codes.numel() - 1) // seq_len
    x = codes[: n * seq_len].reshape(n, seq_len)
    y = codes[1 : n * seq_len + 1].reshape(n, seq_len)
    return x.clone(), y.clone()


def char_corpus(
    path: str | os.PathLike | None = None,
    *,
    seq_len: int = 100,
    test_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
) -> CharCorpus:
    """A text as next-character windows.

    The text (the bundled public-domain *Pride and Prejudice* unless ``path`` names a UTF-8 file,
    ``.gz`` allowed) is split in two: the last ``test_fraction`` of its characters is the test
    part, the rest the training part. Each part is cut into non-overlapping windows of
    ``seq_len`` characters; the targets are the same windows shifted by one character.

    Args:
        path: a text file; ``None``: :data:`BUNDLED_TEXT`.
        seq_len: characters per window (time steps ``T``).
        test_fraction: share of the text (its end) held out for testing, in ``(0, 1)``.
        subset: keep this many training windows, chosen at random with a generator seeded
            with ``seed`` (kept in text order); ``None``: all.

    Raises:
        DatasetError: unreadable file, a text too short for one window in each part, a bad
            ``subset``.
        ValueError: ``seq_len`` or ``test_fraction`` out of range.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}.")
    if not isinstance(test_fraction, (int, float)) or isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    source = Path(path) if path is not None else BUNDLED_TEXT
    text = _read_text(source)
    vocab = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(vocab)}
    codes = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    split = len(text) - int(round(len(text) * test_fraction))
    if min(split, len(text) - split) < seq_len + 1:
        raise DatasetError(
            f"The text {source} ({len(text)} characters) is too short for windows of {seq_len} characters in both "
            f"parts (test fraction {test_fraction}); use a longer text or a smaller seq_len."
        )
    train_x, train_y = _windows(codes[:split], seq_len)
    test_x, test_y = _windows(codes[split:], seq_len)
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= train_x.shape[0]:
            raise DatasetError(f"subset must be an integer between 1 and {train_x.shape[0]} (training windows), got {subset!r}.")
        keep = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:subset].sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    stem = source.name.split(".")[0]
    return CharCorpus(f"char-{stem}", train_x, train_y, test_x, test_y, vocab, str(source), split, len(text) - split)
