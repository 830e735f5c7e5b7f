"""The stochastic pulse update of Gokmen & Vlasov 2016 (their Eq. 2-3 and Fig. 1).

For a rank-1 update ``ΔW = -lr · δ xᵀ`` the periphery turns every input ``x_i`` (a row line) into
a train of ``BL`` Bernoulli pulses fired with probability ``Cx |x_i|`` and every error ``δ_j``
(a column line) into ``BL`` pulses with probability ``Cd |δ_j|``. Wherever a row pulse and a
column pulse coincide, the cross-point takes one device step, up when ``sign(x_i) ≠ sign(δ_j)``.
The expected number of coincidences is ``BL Cx Cd |x_i δ_j|``, so ``Cx = Cd = sqrt(lr / (BL dw_min))``
makes the expected update equal ``lr |x_i δ_j|`` in units of weight (probabilities clipped to 1).

Update management (Gokmen, Onen & Haensch 2017) keeps ``Cx Cd`` but rebalances the two by
``m = sqrt(max|δ| / max|x|)``: ``Cx = C m``, ``Cd = C / m``, so both trains use their full
probability range. Dynamic BL (as in aihwkit) shortens the train to
``BL = ceil(lr max|x| max|δ| / dw_min)`` (at most the configured BL) when the update is small.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numpy as np
import torch

from ..config import Config, register_config
from ..devices.base import DeviceModel
from .engine import binomial, pulse_probabilities, pulse_scales, stacked_update  # noqa: F401 (re-exported)
from .kernels import select_backend

__all__ = ["PulseUpdateConfig", "UpdateCounters", "pulsed_update", "exact_update"]

PULSE_TYPES = ("stochastic", "expected")
MODES = ("sequential", "summed", "batched")


@register_config
@dataclasses.dataclass
class PulseUpdateConfig(Config):
    """How the tile turns ``x`` and ``δ`` into device pulses.

    Attributes:
        pulse_type: ``"stochastic"`` (Bernoulli pulse trains, the hardware) or ``"expected"``
            (every device moves by its expected number of coincidences; deterministic).
        bl: pulse-train length ``BL`` (the maximum, when ``dynamic_bl``).
        update_management: rebalance ``Cx`` and ``Cd`` by ``sqrt(max|δ| / max|x|)``.
        dynamic_bl: shorten the pulse train for small updates (``BL = ceil(lr max|x| max|δ| / dw_min)``).
        mode: ``"sequential"``: a batch of B samples is B rank-1 pulse updates one after another,
            as the array performs them (the reference). ``"summed"``: every pulse train of the
            batch is drawn, and each device's exact numbers of up and down coincidences over the
            whole batch are applied at once; only the order of the pulses within the batch is
            lost (it matters at bounds and for weight-dependent steps). Cheap when the array is
            small and the batch long, as for convolutions (one rank-1 update per image patch).
            ``"batched"``: one vectorised update per batch: the pulse counts of the column lines
            are drawn exactly, the coincidences given them as one Gaussian per device, applied at
            the present weight (fast for large arrays; see :func:`_batched` for the
            approximations and ``docs/update-modes.md`` for the measured differences).
    """

    polymorphic = True

    pulse_type: str = "stochastic"
    bl: int = 10
    update_management: bool = False
    dynamic_bl: bool = False
    mode: str = "sequential"

    def validate(self) -> None:
        self._check_choice("pulse_type", PULSE_TYPES)
        self._check_choice("mode", MODES)
        if isinstance(self.bl, bool) or not isinstance(self.bl, int) or self.bl < 1:
            self._fail("bl", "must be an integer >= 1 (the number of pulse slots, e.g. 10).")
        for field in ("update_management", "dynamic_bl"):
            if not isinstance(getattr(self, field), bool):
                self._fail(field, "must be true or false.")
        if self.dynamic_bl and not self.update_management:
            self._fail(
                "dynamic_bl",
                "needs update_management=True: the shortened train is chosen so that the rebalanced "
                "probabilities Cx max|x| = Cd max|δ| stay <= 1; without rebalancing the larger side clips "
                "and the mean update is too small (aihwkit couples the two the same way).",
            )


class UpdateCounters:
    """What the update cost the hardware, accumulated over the life of a tile.

    Attributes:
        rank1_updates: rank-1 (outer-product) writes performed on the array.
        pulses: pulses sent on row and column lines together, counted as their expected
            number ``BL (Σ_i p_i + Σ_j q_j)`` per rank-1 update in every mode (the stochastic
            update skips drawing row trains when no column fires, so it cannot count them).
        coincidences: device steps triggered (sum over devices of coincidences).
        steps: batch updates applied (optimizer steps that reached the tile); with the update
            algorithms of :mod:`insitu.update.lowrank` one step is one or more rank-1 writes.
        extra_memory: the most numbers the update algorithm held at once between the samples
            of a batch (:meth:`UpdateAlgorithmConfig.extra_memory`).

    Pulse and coincidence sums are accumulated as tensors so that counting never waits for the
    device; they are converted when read. A fused update (:mod:`insitu.update.fused`) keeps
    running sums of its own and attaches them with :meth:`attach` (objects with ``pulses`` and
    ``coincidences`` properties, read with the rest).
    """

    def __init__(
        self, rank1_updates: int = 0, pulses: float = 0.0, coincidences: float = 0.0, steps: int = 0, extra_memory: int = 0
    ):
        self.rank1_updates = int(rank1_updates)
        self.steps = int(steps)
        self.extra_memory = int(extra_memory)
        self._pulses: list = [float(pulses)]
        self._coincidences: list = [float(coincidences)]
        self._sources: list = []

    def attach(self, source) -> None:
        """Add a running source of pulse and coincidence counts (see the class docstring)."""
        self._sources.append(source)

    def add_pulses(self, n) -> None:
        self._pulses.append(n)
        if len(self._pulses) > 4096:
            self._pulses = [self.pulses]

    def add_coincidences(self, n) -> None:
        self._coincidences.append(n)
        if len(self._coincidences) > 4096:
            self._coincidences = [self.coincidences]

    @property
    def pulses(self) -> float:
        return float(sum(float(v) for v in self._pulses)) + sum(s.pulses for s in self._sources)

    @property
    def coincidences(self) -> float:
        return float(sum(float(v) for v in self._coincidences)) + sum(s.coincidences for s in self._sources)

    def to_dict(self) -> dict:
        return {
            "rank1_updates": self.rank1_updates,
            "pulses": self.pulses,
            "coincidences": self.coincidences,
            "steps": self.steps,
            "extra_memory": self.extra_memory,
        }

    def __repr__(self) -> str:
        return f"UpdateCounters({self.to_dict()})"


def exact_update(weights: torch.Tensor, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """The floating-point update ``W -= lr Σ_b δ_b x_bᵀ``, in place (the ideal device)."""
    weights.addmm_(d.t(), x, alpha=-lr)


_NO_CONTEXT = contextlib.nullcontext()


def pulsed_update(
    weights: torch.Tensor,
    params: torch.Tensor,
    model: DeviceModel,
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    dw_min: float,
    config: PulseUpdateConfig,
    generator: torch.Generator,
    counters: UpdateCounters,
    rng_state: torch.Tensor | None = None,
    cache: dict | None = None,
) -> None:
    """Apply ``ΔW ≈ -lr Σ_b δ_b x_bᵀ`` to ``weights`` in place through device pulses.

    The one entry point of the pulse update for a single array: the backend is chosen by the
    tensors' device (:func:`insitu.update.kernels.select_backend`). On CPU, with ``rng_state``
    given and a device model that has a compiled response, the stochastic ``sequential`` and
    ``summed`` updates run in the compiled kernels (:mod:`insitu.update.kernels.compiled`), their
    random numbers drawn from ``rng_state``; everything else runs the PyTorch engine (:mod:`insitu.update.engine`: the
    reference, and the CUDA path).

    Args:
        weights: the array, shape ``(out, in)``, or ``(out, in, n)`` for unit cells of ``n``
            devices per weight (every device of a cell receives the same pulses).
        params: per-device parameters, shape ``(P, *weights.shape)`` in the model's layout.
        model: the device response.
        x: inputs, shape ``(batch, in)``.
        d: errors ``δ = ∂loss/∂y``, shape ``(batch, out)``.
        lr: learning rate.
        dw_min: the nominal device step, which sets ``Cx Cd`` (see module docstring).
        config: pulse settings.
        generator: draws pulses and cycle-to-cycle noise.
        counters: updated in place.
        rng_state: the tile's compiled-kernel generator state (:func:`insitu.update.kernels.rng_state.new_state`).
        cache: a dict the caller keeps between calls (the compiled kernel's views of the state).
    """
    if rng_state is not None and _compiled_update(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache):
        return
    # The torch engine's stacked layout (insitu.update.engine): one array of G = 1, a unit cell
    # of n devices per cross-point (1 for a plain array); views, so the update lands in place.
    stacked = weights.unsqueeze(0) if weights.dim() == 3 else weights.unsqueeze(0).unsqueeze(-1)
    planes = None
    if params is not None:
        planes = params.unsqueeze(1) if params.dim() == 4 else params.unsqueeze(1).unsqueeze(-1)
    # Entering no_grad costs as much as a small tensor operation; the optimizer already did.
    with torch.no_grad() if torch.is_grad_enabled() else _NO_CONTEXT:
        stacked_update(stacked, planes, model, x.unsqueeze(0), d.unsqueeze(0), lr, dw_min, config, generator, counters)


def _compiled_update(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache) -> bool:
    """Run the update in a compiled kernel if this backend and update allow it (True if it ran):
    the stochastic ``sequential`` mode with the model's :meth:`compiled_response`, the ``summed``
    mode with its :meth:`compiled_mixed_response`.

    ``cache`` (a dict owned by the caller, e.g. the tile) keeps the kernel and the numpy views of
    the state between calls: at batch 1 the kernel runs for microseconds, so the Python around
    it is kept to a few checks.
    """
    mode = config.mode
    if config.pulse_type != "stochastic" or mode not in ("sequential", "summed") or params is None:
        return False
    if not weights.is_cpu or select_backend("cpu") != "compiled":
        return False
    if getattr(model, "per_device_state", False):
        # State planes updated in place (the conductance pairs): the sequential mode runs in the
        # stateful kernel when the model has one; everything else on the torch path.
        if mode != "sequential":
            return False
        return _stateful_update(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache)
    plan = cache.get(mode) if cache is not None else None
    # The packed parameters are a copy: rebuilt when the parameters change (load_state_dict) or
    # any tensor moves to new memory (a dtype or device change keeps the Parameter object).
    key = (weights.data_ptr(), params.data_ptr(), params._version, rng_state.data_ptr())
    if plan is None or plan[0] != key or plan[1] is not model:
        plan = _compiled_plan(key, weights, params, model, rng_state, mode)
        if plan is None:
            return False
        if cache is not None:
            cache[mode] = plan
    _, _, kernel, cell, packed, words, spare, tally = plan
    # The kernels keep running sums in ``tally`` (one per plan); the counters read them when they
    # are read (attached before the kernel adds this update's counts).
    _attach_tally(counters, tally, cache)
    dtype = weights.dtype
    kernel(
        cell, packed, _as_numpy(x, dtype), _as_numpy(d, dtype), lr, dw_min, config.bl,
        config.update_management, config.dynamic_bl, model.c2c, words, spare, tally,
    )
    counters.rank1_updates += x.shape[0]
    return True


def _stateful_update(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache) -> bool:
    """The compiled sequential update of a device with per-device state
    (:meth:`ConductancePairModel.compiled_state_response`): the kernel reads and writes the
    tile's parameter tensor through a numpy view in its own planes-first layout, so the state
    it writes is the tile's with no copy back, and sets each moved weight to the read of that
    state. True if it ran."""
    plan = cache.get("stateful") if cache is not None else None
    # Views only (nothing packed): rebuilt when a tensor moves or is replaced, or the model changes,
    # not when the parameters are written in place (a refresh writes them at every update; each
    # rebuild attaches a new tally to the counters).
    key = (weights.data_ptr(), params.data_ptr(), rng_state.data_ptr())
    if plan is None or plan[0] != key or plan[1] is not model:
        plan = _stateful_plan(key, weights, params, model, rng_state)
        if plan is None:
            return False
        if cache is not None:
            cache["stateful"] = plan
    _, _, kernel, cell, planes, scale, words, spare, tally = plan
    _attach_tally(counters, tally, cache)
    kernel(
        cell, planes, scale, _as_numpy(x, weights.dtype), _as_numpy(d, weights.dtype), lr, dw_min, config.bl,
        config.update_management, config.dynamic_bl, words, spare, tally,
    )
    counters.rank1_updates += x.shape[0]
    return True


def compiled_state_update(weights: np.ndarray, state: tuple, respond, x, d, lr, dw_min, config, counters, rng_state, cache) -> None:
    """The compiled sequential update of an array whose state is not a device model's parameter
    tensor (the LSP of the two-pair PCM cell): the stateful sequential kernel with ``respond``
    (:mod:`.kernels.compiled_pairs`), which reads and writes the numpy views in ``state`` and
    returns each moved cross-point's new weight; the kernel sets ``weights[j, i, 0]`` (a numpy
    array ``(out, in, 1)``) to it. The caller has checked that the update is the stochastic
    ``sequential`` mode on the compiled backend. Trains and normals come from ``rng_state``; the
    kernel and the stream's views are kept in ``cache`` (the tile's kernel cache)."""
    plan = cache.get("cell_state")
    key = (rng_state.data_ptr(), respond)
    if plan is None or plan[0] != key:
        from .kernels.compiled import stateful_sequential_kernel
        from .kernels.rng_state import as_views

        # The kernel's unused scale argument is allocated once here, not at every update.
        plan = cache["cell_state"] = (key, stateful_sequential_kernel(respond), *as_views(rng_state), np.zeros(3), np.ones(1))
    _, kernel, words, spare, tally, unit = plan
    _attach_tally(counters, tally, cache)
    dtype = torch.float32 if weights.dtype == np.float32 else torch.float64
    kernel(
        weights, state, unit, _as_numpy(x, dtype), _as_numpy(d, dtype), lr, dw_min, config.bl,
        config.update_management, config.dynamic_bl, words, spare, tally,
    )
    counters.rank1_updates += x.shape[0]


def _stateful_plan(key, weights, params, model, rng_state):
    """What :func:`_stateful_update` keeps between calls, or None if the model has no stateful
    compiled response or the tensors cannot be viewed as the kernel needs them."""
    hook = getattr(model, "compiled_state_response", None)
    respond = hook() if hook is not None else None
    if respond is None or params.dtype != weights.dtype or params.requires_grad:
        return None
    from .kernels.compiled import stateful_sequential_kernel
    from .kernels.rng_state import as_views

    cell = weights.detach() if weights.dim() == 3 else weights.detach().unsqueeze(-1)  # (out, in, devices)
    planes = params if params.dim() == 4 else params.unsqueeze(-1)  # (P, out, in, devices): a view
    scale = np.array([model.g_scale], dtype=cell.numpy().dtype)
    return (key, model, stateful_sequential_kernel(respond), cell.numpy(), planes.numpy(), scale, *as_views(rng_state), np.zeros(3))


def _attach_tally(counters: UpdateCounters, tally: np.ndarray, cache: dict | None) -> None:
    """Attach a plan's running ``tally`` to ``counters`` unless it is already (the pairs attached
    so far are kept in ``cache["attached"]``, those of other counters dropped)."""
    attached = cache.setdefault("attached", []) if cache is not None else []
    for source, held in attached:
        if source is counters and held is tally:
            return
    counters.attach(_KernelTally(tally))
    attached[:] = [(source, held) for source, held in attached if source is counters] + [(counters, tally)]


def _as_numpy(values: torch.Tensor, dtype: torch.dtype):
    """A numpy view of ``values`` in ``dtype``, contiguous (a copy only when needed)."""
    if values.dtype == dtype and not values.requires_grad and values.is_contiguous():
        return values.numpy()
    if values.requires_grad:
        values = values.detach()
    if values.dtype != dtype or not values.is_contiguous():
        values = values.to(dtype).contiguous()
    return values.numpy()


class _KernelTally:
    """Pulses and coincidences the compiled kernel counted into its running ``tally`` since this
    was attached to a tile's counters (:meth:`UpdateCounters.attach`)."""

    __slots__ = ("tally", "base_pulses", "base_coincidences")

    def __init__(self, tally: np.ndarray):
        self.tally = tally
        self.base_pulses, self.base_coincidences = float(tally[0]), float(tally[1])

    @property
    def pulses(self) -> float:
        return float(self.tally[0]) - self.base_pulses

    @property
    def coincidences(self) -> float:
        return float(self.tally[1]) - self.base_coincidences


def _compiled_plan(key, weights, params, model, rng_state, mode="sequential"):
    """What :func:`_compiled_update` keeps between calls, or None if ``model`` has no compiled
    response for ``mode``: the kernel, numpy views of the weights and of the generator state, and
    the parameters packed for the kernel."""
    respond = getattr(model, "compiled_response" if mode == "sequential" else "compiled_mixed_response", None)
    respond = respond() if respond is not None else None
    if respond is None:
        return None
    from .kernels.compiled import sequential_kernel, summed_kernel
    from .kernels.rng_state import as_views

    make = sequential_kernel if mode == "sequential" else summed_kernel

    cell = weights.detach() if weights.dim() == 3 else weights.detach().unsqueeze(-1)  # (out, in, devices)
    planes = params if params.dim() == 4 else params.unsqueeze(-1)
    # Interleaved per device, (out, in, devices, P'): a device's parameters in one cache line.
    packed = model.pack_for_kernel(planes, weights.dtype)
    return (key, model, make(respond), cell.numpy(), packed.numpy(), *as_views(rng_state), np.zeros(3))
