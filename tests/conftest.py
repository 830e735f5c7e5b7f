"""Shared test fixtures: the real datasets beside the repository, one thread for torch and numba."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: ``shared/datasets`` sits beside the repository (the CI clone has it in the same place).
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.fail(f"The shared datasets are missing: expected MNIST under {SHARED_DATASETS}/mnist.")
    return SHARED_DATASETS


@pytest.fixture(autouse=True)
def _default_update_backend():
    """Each test starts on the default pulse-update backend (``insitu train --backend`` sets it
    for the process, and CLI tests run in this process)."""
    from insitu.update.kernels import set_backend

    set_backend("auto")
    yield
    set_backend("auto")


@pytest.fixture(autouse=True)
def _one_thread():
    """Each test starts on one PyTorch thread and one numba thread (results do not depend on
    either; tests of that set two themselves, and CLI tests run in this process and set them):
    the two test processes of CI share two cores, and a process on one thread never compiles
    the parallel build of the replicas' products (``io_compiled.stacked_mvm``)."""
    torch.set_num_threads(1)
    from insitu.update.kernels import compiled_available

    if compiled_available():
        import numba

        numba.set_num_threads(1)
    yield
