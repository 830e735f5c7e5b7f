"""Sequential and permuted sequential MNIST, on the real data beside the repository."""

from __future__ import annotations

import pytest
import torch

from insitu.data import DatasetError, load_dataset
from insitu.sequence_data import load_sequential_mnist, pixel_permutation, pixel_sequences, row_sequences


def test_rows_are_time_steps(shared_datasets):
    seq = load_sequential_mnist(shared_datasets, subset=50, test_subset=20)
    images = load_dataset("mnist", path=shared_datasets, subset=50)
    assert seq.name == "sequential-mnist" and seq.permutation is None
    assert seq.train_x.shape == (50, 28, 28) and seq.test_x.shape == (20, 28, 28)
    assert (seq.steps, seq.features, seq.num_classes) == (28, 28, 10)
    # Step t of image n is row t of that image.
    assert torch.equal(seq.train_x[7, 13], images.train_x[7].reshape(28, 28)[13])
    assert torch.equal(seq.train_y, images.train_y)
    assert seq.train_x[:, 14].sum() > 0  # real ink in the middle rows


def test_permuted_pixels_fixed_seeded_order(shared_datasets):
    a = load_sequential_mnist(shared_datasets, permuted=True, subset=10, test_subset=5, permutation_seed=3)
    b = load_sequential_mnist(shared_datasets, permuted=True, subset=10, test_subset=5, permutation_seed=3)
    c = load_sequential_mnist(shared_datasets, permuted=True, subset=10, test_subset=5, permutation_seed=4)
    images = load_dataset("mnist", path=shared_datasets, subset=10)
    assert a.train_x.shape == (10, 784, 1) and a.test_x.shape == (5, 784, 1)
    assert torch.equal(a.permutation, b.permutation) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.permutation, c.permutation)
    assert torch.equal(a.train_x[:, :, 0], images.train_x[:, a.permutation])
    # Same pixels, other order: the pixel sums of every image are unchanged.
    torch.testing.assert_close(a.train_x.sum((1, 2)), images.train_x.sum(1))
    grouped = load_sequential_mnist(shared_datasets, permuted=True, pixels_per_step=4, subset=10, test_subset=5)
    assert grouped.train_x.shape == (10, 196, 4) and (grouped.steps, grouped.features) == (196, 4)
    assert torch.equal(grouped.train_x.reshape(10, 784), images.train_x[:, pixel_permutation(784, 0)])


def test_bad_arguments_say_what_to_change(shared_datasets):
    with pytest.raises(ValueError, match="positive divisor of the 784"):
        pixel_sequences(torch.zeros(2, 784), 5)
    with pytest.raises(ValueError, match="permutation of range"):
        pixel_sequences(torch.zeros(2, 4), 1, torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(N, 784\)"):
        row_sequences(torch.zeros(2, 64), (1, 28, 28))
    with pytest.raises(DatasetError, match="test_subset"):
        load_sequential_mnist(shared_datasets, subset=5, test_subset=0)
