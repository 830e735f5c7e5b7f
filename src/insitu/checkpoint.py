"""Loading checkpoints safely, and exclusive locks on run folders.

Checkpoints are read with ``torch.load(..., weights_only=True)``: PyTorch's restricted unpickler
accepts tensors, generator states and plain containers and numbers only, so a crafted
``checkpoint.pt`` (a pickle whose ``__reduce__`` calls ``os.system``) cannot run code on
``--resume`` or in a sweep worker. Every checkpoint insitu writes holds nothing else (configs and
results are stored as plain dicts), so no extra globals need allowing.

A checkpoint that cannot be read is reported as a :class:`CheckpointError` naming the file and
what to do, never as a raw ``OSError``/``EOFError``/``UnpicklingError`` from deep inside torch.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

__all__ = ["CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError", "load_checkpoint", "FolderLock", "LockedError"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects other than tensors and plain data (it might run code): refused."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or garbled (not a checkpoint torch can read)."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (see the module docstring).

    Raises:
        UnsafeCheckpointError: the file asks to build arbitrary Python objects.
        CorruptCheckpointError: the file is empty, truncated or not a torch checkpoint.
    """
    import torch

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CorruptCheckpointError(_corrupt(path, "it is empty"))
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        # weights_only refusals are UnpicklingErrors that say "Weights only load failed";
        # a garbled legacy pickle is one too, without that text.
        if "weights only" in str(exc).lower():
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UnsafeCheckpointError(
                f"{path} was not loaded: it holds Python objects other than tensors and plain data, which could run "
                f"code when loaded ({first[:200]}). insitu never writes such checkpoints; if you did not make this file "
                "yourself, delete it (and start the run again without --resume)."
            ) from None
        raise CorruptCheckpointError(_corrupt(path, f"unpickling failed: {exc}")) from None
    except (EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptCheckpointError(_corrupt(path, f"{type(exc).__name__}: {str(exc).strip()[:200]}")) from None
    if not isinstance(checkpoint, dict):
        raise CorruptCheckpointError(_corrupt(path, f"it holds a {type(checkpoint).__name__}, not an insitu checkpoint"))
    return checkpoint


def _corrupt(path: Path, why: str) -> str:
    return (
        f"{path} is not a readable checkpoint ({why}); it was probably cut short by a full disk or a copy that "
        "did not finish. Restore it from a backup, or delete it and start the run again without --resume "
        "(a sweep restarts such a point from scratch by itself)."
    )


class LockedError(RuntimeError):
    """Another process holds the lock."""


class FolderLock:
    """An exclusive advisory lock (``flock``) on ``path``, held while the context is open.

    The lock dies with its process (a killed run never leaves a stale lock). Where ``fcntl`` does
    not exist (Windows) there is no protection. ``message`` is the text of the
    :class:`LockedError` (or of ``error``, an exception class) raised when the lock is taken.
    """

    def __init__(self, path: str | os.PathLike, message: str, error: type[Exception] = LockedError):
        self.path = Path(path)
        self.message = message
        self.error = error
        self.handle = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            self.handle.close()
            raise self.error(self.message) from None
        return self

    def __exit__(self, *exc):
        self.handle.close()  # closing releases the lock
