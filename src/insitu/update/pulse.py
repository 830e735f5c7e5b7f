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

import dataclasses
import math

import torch

from ..config import Config, register_config
from ..devices.base import DeviceModel

__all__ = ["PulseUpdateConfig", "UpdateCounters", "pulsed_update", "exact_update"]

PULSE_TYPES = ("stochastic", "expected")
MODES = ("sequential", "batched")


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
            as the array performs them (the reference). ``"batched"``: one vectorised update per
            batch; each device's numbers of up and down coincidences are replaced by their exact
            means and variances over the batch and applied as one Gaussian step at the present
            weight (fast; its difference from the sequential update is measured in
            ``docs/update-modes.md``).
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


@dataclasses.dataclass
class UpdateCounters:
    """What the update cost the hardware, accumulated over the life of a tile.

    Attributes:
        rank1_updates: rank-1 (outer-product) writes performed on the array.
        pulses: pulses sent on row and column lines together (stochastic updates only).
        coincidences: device steps triggered (sum over devices of coincidences).
    """

    rank1_updates: int = 0
    pulses: float = 0.0
    coincidences: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pulse_scales(x_max, d_max, lr: float, dw_min: float, config: PulseUpdateConfig):
    """``(Cx, Cd, BL)`` for inputs whose largest magnitudes are ``x_max`` and ``d_max``.

    ``x_max`` and ``d_max`` are tensors of shape ``(batch, 1)`` (per rank-1 update); the scales
    are tensors of the same shape, BL an int or an int tensor.
    """
    bl = config.bl
    if config.dynamic_bl:
        needed = torch.ceil(lr * x_max * d_max / dw_min).clamp(1, config.bl)
        bl = needed
        c = torch.sqrt(lr / (dw_min * needed))
    else:
        c = math.sqrt(lr / (dw_min * bl))
    if config.update_management:
        # Both maxima positive is guaranteed by the caller (zero vectors are skipped).
        m = torch.sqrt(d_max / x_max)
        return c * m, c / m, bl
    return c * torch.ones_like(x_max), c * torch.ones_like(d_max), bl


def exact_update(weights: torch.Tensor, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """The floating-point update ``W -= lr Σ_b δ_b x_bᵀ``, in place (the ideal device)."""
    weights.addmm_(d.t(), x, alpha=-lr)


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
) -> None:
    """Apply ``ΔW ≈ -lr Σ_b δ_b x_bᵀ`` to ``weights`` in place through device pulses.

    Args:
        weights: the array, shape ``(out, in)``.
        params: per-device parameters, shape ``(out, in, 6)``.
        model: the device response.
        x: inputs, shape ``(batch, in)``.
        d: errors ``δ = ∂loss/∂y``, shape ``(batch, out)``.
        lr: learning rate.
        dw_min: the nominal device step, which sets ``Cx Cd`` (see module docstring).
        config: pulse settings.
        generator: draws pulses and cycle-to-cycle noise.
        counters: updated in place.
    """
    with torch.no_grad():
        x_max = x.abs().amax(dim=1, keepdim=True)
        d_max = d.abs().amax(dim=1, keepdim=True)
        active = ((x_max > 0) & (d_max > 0)).squeeze(1)
        if not bool(active.all()):
            x, d, x_max, d_max = x[active], d[active], x_max[active], d_max[active]
        if x.shape[0] == 0:
            return
        cx, cd, bl = pulse_scales(x_max, d_max, lr, dw_min, config)
        px = (cx * x.abs()).clamp_max_(1)
        pd = (cd * d.abs()).clamp_max_(1)
        if config.pulse_type == "expected":
            _expected(weights, params, model, x, d, px, pd, bl, counters)
        elif config.mode == "batched":
            _batched(weights, params, model, x, d, px, pd, bl, generator, counters)
        else:
            blist = bl.flatten().to(torch.int64).tolist() if torch.is_tensor(bl) else [bl] * x.shape[0]
            for b in range(x.shape[0]):
                _rank1_stochastic(weights, params, model, x[b], d[b], px[b], pd[b], blist[b], generator, counters)


def _rank1_stochastic(weights, params, model, x, d, px, pd, bl, generator, counters) -> None:
    """One rank-1 pulse update: draw the trains, count coincidences, step the devices that fired.

    Only cross-points whose row and column both fired at least once can change, so the
    coincidence counts and the device response are computed on that sub-block alone. During
    training the errors are small, few column lines fire, and the block is a small part of the
    array; the result is the same as on the whole array.
    """
    n_in = x.shape[0]
    fire = torch.rand((bl, n_in + d.shape[0]), generator=generator, device=x.device, dtype=x.dtype) < torch.cat((px, pd))
    fired = fire.any(dim=0)
    rows = fired[:n_in].nonzero().squeeze(1)
    cols = fired[n_in:].nonzero().squeeze(1)
    counters.rank1_updates += 1
    if rows.numel() == 0 or cols.numel() == 0:
        counters.pulses += float(fire.sum())
        return
    row_trains = fire[:, rows].to(x.dtype)
    col_trains = fire[:, n_in + cols].to(x.dtype)
    counts = col_trains.t() @ row_trains  # (n_cols, n_rows) coincidences per device
    # ΔW = -lr δ xᵀ: the weight grows where the signs of δ_j and x_i differ.
    up = (d[cols] > 0).unsqueeze(1) ^ (x[rows] > 0).unsqueeze(0)
    block = (cols.unsqueeze(1), rows.unsqueeze(0))
    weights[block] = model.apply_pulses(weights[block], counts, up, params[block], generator)
    counters.pulses += float(row_trains.sum() + col_trains.sum())
    counters.coincidences += float(counts.sum())


def _signed_counts(x, d, px, pd, bl):
    """Expected coincidences over the batch, split by direction: ``(n_up, n_down)``, each (out, in).

    ``n_down`` collects the samples where ``sign(δ_j) = sign(x_i)`` (the weight shrinks).
    """
    if torch.is_tensor(bl):
        pd = pd * bl  # per-sample train length scales that sample's expected count
    else:
        pd = pd * float(bl)
    pos_x, neg_x = px * (x > 0), px * (x < 0)
    pos_d, neg_d = pd * (d > 0), pd * (d < 0)
    n_down = pos_d.t() @ pos_x + neg_d.t() @ neg_x
    n_up = pos_d.t() @ neg_x + neg_d.t() @ pos_x
    return n_up, n_down


def _expected(weights, params, model, x, d, px, pd, bl, counters) -> None:
    """Deterministic update: each sample moves each device by its expected number of steps."""
    for b in range(x.shape[0]):
        blen = bl[b] if torch.is_tensor(bl) else bl
        n_up, n_down = _signed_counts(x[b : b + 1], d[b : b + 1], px[b : b + 1], pd[b : b + 1], blen)
        up = n_up > 0
        weights.copy_(model.apply_pulses(weights, n_up + n_down, up, params, None))
        counters.rank1_updates += 1
        counters.coincidences += float(n_up.sum() + n_down.sum())


def _batched(weights, params, model, x, d, px, pd, bl, generator, counters) -> None:
    """Vectorised batch update (see :class:`PulseUpdateConfig`, ``mode="batched"``).

    Coincidences of different samples are independent, so each device's up (down) count is a
    sum of independent ``Binomial(BL, p_i q_j)`` terms; its mean and variance are exact and cost
    one matrix product each. Treating the sum as Gaussian, evaluating the steps at the present
    weight and clipping once are the approximations.
    """
    n_up, n_down = _signed_counts(x, d, px, pd, bl)
    # Var of Binomial(BL, p) = BL p (1 - p), p = p_i q_j; BL p² q² summed over the batch:
    sq_up, sq_down = _signed_counts(x, d, px * px, pd * pd, bl)
    var_up, var_down = n_up - sq_up, n_down - sq_down
    weights.copy_(model.apply_mixed(weights, n_up, n_down, var_up, var_down, params, generator))
    counters.rank1_updates += x.shape[0]
    lengths = bl.squeeze(1) if torch.is_tensor(bl) else float(bl)
    counters.pulses += float(((px.sum(1) + pd.sum(1)) * lengths).sum())  # expected number
    counters.coincidences += float(n_up.sum() + n_down.sum())
