"""The pulse update of replicas in lockstep: the engine's stacked layout with ``G = R`` arrays.

The arrays of :class:`~insitu.replicas.ReplicatedTile` are stacked along a leading axis: weights
``(R, out, in)``, per-device parameters ``(P, R, out, in)`` in the device model's plane layout,
inputs ``(R, batch, in)``, errors ``(R, batch, out)``. Each replica's update is the stochastic
pulse update of :mod:`insitu.update.engine` (the same code as a single tile's, every mode) with
its own nominal step (which sets ``Cx Cd``), ``BL`` and cycle-to-cycle spread; on the torch
backend the random numbers come from one generator, so a replica's run equals a separate run in
distribution, not draw for draw. (On CPU the compiled backend runs the ``sequential`` mode in
:func:`insitu.update.kernels.compiled.stacked_kernel`, one stream per replica, and for devices
with per-device state in :func:`~insitu.update.kernels.compiled.stacked_stateful_kernel`.)

A device with per-device state (a conductance pair) takes its pulses through the same model
calls as a single tile's (``apply_signed_pulses`` on the gathered block in ``sequential`` mode,
``apply_mixed`` on the whole stack in ``summed`` mode): the model's methods are elementwise over
any leading axes, so the state planes of the stacked parameters ``(P, R, out, in)`` are updated
in place (the gathered block's planes written back), and the weights receive their read.

In ``sequential`` mode, per sample each replica fires its own row and column trains, and only
the block of fired columns × fired rows of every replica is touched (padded to the largest
block among the replicas; padding lines never fired, so their counts are zero and their
devices stay as they are).
"""

from __future__ import annotations

import numpy as np
import torch

from ..devices.base import DeviceModel
from .engine import stacked_update
from .pulse import PulseUpdateConfig

__all__ = ["ReplicaCounters", "replica_pulsed_update", "replica_exact_update"]


class ReplicaCounters:
    """:class:`~insitu.update.pulse.UpdateCounters` of ``R`` replicas: pulses and coincidences
    per replica (tensors ``(R,)``), rank-1 writes and steps shared (the replicas move in lockstep)."""

    def __init__(self, replicas: int, device=None):
        self.replicas = int(replicas)
        self.rank1_updates = 0
        self.steps = 0
        self.extra_memory = 0
        self._members: list | None = None
        self._tally: np.ndarray | None = None
        self.pulses = torch.zeros(replicas, dtype=torch.float64, device=device)
        self.coincidences = torch.zeros(replicas, dtype=torch.float64, device=device)

    @property
    def pulses(self) -> torch.Tensor:
        """Pulses per replica ``(R,)``."""
        self._pull()
        return self._pulses

    @pulses.setter
    def pulses(self, value: torch.Tensor) -> None:
        self._drop_tally()
        self._pulses = value

    @property
    def coincidences(self) -> torch.Tensor:
        """Coincidences per replica ``(R,)``."""
        self._pull()
        return self._coincidences

    @coincidences.setter
    def coincidences(self, value: torch.Tensor) -> None:
        self._drop_tally()
        self._coincidences = value

    def kernel_tally(self) -> np.ndarray:
        """The float64 array ``(R, 3)`` the compiled kernels add their per-replica running sums to
        (pulses, coincidences, rank-1 writes; the last unused here, :attr:`rank1_updates` counts
        them); it is added to :attr:`pulses` and :attr:`coincidences` when they are read, so a
        training step pays no tensor operation for its counts."""
        if self._tally is None:
            self._tally = np.zeros((self.replicas, 3))
        return self._tally

    def _drop_tally(self) -> None:
        # Counters set anew (a loaded state, a move) replace what the kernels had counted.
        if self._tally is not None:
            self._tally[:] = 0.0

    def follow(self, members) -> None:
        """Take pulses and coincidences from per-replica :class:`UpdateCounters` ``members``
        (the counters of replicas whose learning-rule cells write them), read when reported."""
        self._members = list(members)

    def _pull(self) -> None:
        tally = self._tally
        if tally is not None and tally[:, :2].any():
            self._pulses += torch.from_numpy(tally[:, 0].copy()).to(self._pulses)
            self._coincidences += torch.from_numpy(tally[:, 1].copy()).to(self._coincidences)
            tally[:] = 0.0
        if self._members is not None:
            device = self._pulses.device
            self._pulses = torch.tensor([m.pulses for m in self._members], dtype=torch.float64, device=device)
            self._coincidences = torch.tensor([m.coincidences for m in self._members], dtype=torch.float64, device=device)

    def add_pulses(self, per_replica: torch.Tensor) -> None:
        """Add pulses ``(R,)`` (the engine's per-array counts)."""
        self.pulses += per_replica.to(self.pulses.dtype)

    def add_coincidences(self, per_replica: torch.Tensor) -> None:
        """Add coincidences ``(R,)``."""
        self.coincidences += per_replica.to(self.coincidences.dtype)

    def replica(self, r: int) -> dict:
        """The counters of replica ``r`` as :meth:`UpdateCounters.to_dict` gives them."""
        return {
            "rank1_updates": self.rank1_updates,
            "pulses": float(self.pulses[r]),
            "coincidences": float(self.coincidences[r]),
            "steps": self.steps,
            "extra_memory": self.extra_memory,
        }

    def to_dict(self) -> dict:
        return {
            "replicas": self.replicas,
            "rank1_updates": self.rank1_updates,
            "steps": self.steps,
            "extra_memory": self.extra_memory,
            "pulses": self.pulses.tolist(),
            "coincidences": self.coincidences.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict, device=None) -> "ReplicaCounters":
        counters = cls(state["replicas"], device)
        counters.rank1_updates, counters.steps = int(state["rank1_updates"]), int(state["steps"])
        counters.extra_memory = int(state.get("extra_memory", 0))
        counters.pulses = torch.tensor(state["pulses"], dtype=torch.float64, device=device)
        counters.coincidences = torch.tensor(state["coincidences"], dtype=torch.float64, device=device)
        return counters


def replica_exact_update(weights: torch.Tensor, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """``W_r -= lr Σ_b δ_rb x_rbᵀ`` for every replica, in place (the ideal device)."""
    weights.baddbmm_(d.transpose(1, 2), x, alpha=-lr)


def replica_pulsed_update(
    weights: torch.Tensor,
    params: torch.Tensor,
    model: DeviceModel,
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    nominal_step: torch.Tensor,
    bl: torch.Tensor,
    config: PulseUpdateConfig,
    generator: torch.Generator,
    counters: ReplicaCounters,
) -> None:
    """Apply ``ΔW_r ≈ -lr Σ_b δ_rb x_rbᵀ`` to every replica ``r`` in place through device pulses.

    Args:
        weights: ``(R, out, in)``.
        params: per-device parameters ``(P, R, out, in)`` in ``model``'s plane layout.
        model: the device response (its ``c2c`` a float or a tensor ``(R, 1, 1, 1)``).
        x: inputs ``(R, batch, in)``; d: errors ``(R, batch, out)``.
        lr: learning rate (shared).
        nominal_step: nominal step of each replica's device, ``(R, 1, 1)`` (sets ``Cx Cd``).
        bl: pulse-train length of each replica, ``(R, 1, 1)`` float (the maximum with dynamic BL).
        config: pulse settings shared by the replicas (``bl`` aside).
        generator: draws pulses and cycle-to-cycle noise.
        counters: updated in place.
    """
    with torch.no_grad():
        stacked_update(
            weights.unsqueeze(-1), params.unsqueeze(-1), model, x, d, lr, nominal_step, config, generator, counters, bl=bl,
        )
