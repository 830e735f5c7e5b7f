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

Both are returned as a :class:`SequenceDataset` in batch-first layout ``(N, T, F)``, ready for
``AnalogLSTM(..., batch_first=True)`` (or ``nn.LSTM``). Only the standard library, numpy and
torch are used; the images are read by :func:`insitu.data.load_dataset` (no download unless asked).
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .data import Dataset, DatasetError, load_dataset

__all__ = ["SequenceDataset", "pixel_permutation", "row_sequences", "pixel_sequences", "load_sequential_mnist"]


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
