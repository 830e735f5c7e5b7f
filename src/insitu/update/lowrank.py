"""Update algorithms: which rank-1 writes a batch becomes (Hoskins et al. 2019, Front. Neurosci. 13:793).

A crossbar applies a rank-1 update ``ΔW = -lr δ xᵀ`` in one parallel step (the pulse update of
:mod:`insitu.update.pulse`). A mini-batch of ``n`` samples has the gradient
``G = Σ_j δ_j x_jᵀ`` (``a × b``; the loss already averages over the batch, so ``G`` is the mean
gradient), of rank up to ``n``. The algorithms differ in how ``G`` reaches the array:

* ``sgd``: one rank-1 write per sample, ``(x_j, δ_j)`` as they are.
* ``mbgd``: the full-rank ``G``. ``full_write=True`` (default) writes it row by row: row ``r`` of
  ``G`` is one rank-1 write ``e_r g_rᵀ`` (a general matrix cannot be written in one parallel step),
  so one step costs ``a`` rank-1 writes; ``full_write=False`` writes the batch's ``n`` rank-1 terms.
* ``svd``: the exact top-``k`` singular triplets of ``G``, ``k`` rank-1 writes ``σ_i u_i v_iᵀ``.
* ``sbe``: streaming batch eigenupdates, the top-``k`` triplets estimated while the batch streams
  through, holding only ``k (a + b)`` numbers (Hoskins et al. 2019, Eqs. 4-6 of arXiv:1903.01635):

  ``X ← j/(j+1) X + 1/(j+1) x_j (δ_j · Δ/‖Δ‖)``,
  ``Δ ← j/(j+1) Δ + 1/(j+1) δ_j (x_j · X/‖X‖)``,
  ``σ ← j/(j+1) σ + 1/(j+1) (x_j · X/‖X‖)(δ_j · Δ/‖Δ‖)``,

  where ``j`` counts the samples of the batch from 1 and the estimate of the previous batch is
  the starting point (warm start), so it enters with the weight of one sample. The write is
  ``n σ Δ̂ X̂ᵀ`` (``σ`` estimates the top singular value of the *average* term ``δ xᵀ``). For
  ``k > 1`` ``X`` and ``Δ`` are ``b × k`` and ``a × k``, re-orthonormalised after every sample
  (an Oja-style asymmetric subspace iteration, which for ``k = 1`` is exactly the normalisation
  above); the ``k × k`` running product ``S`` is diagonalised at the end of the batch.

Every write goes through the tile's device model (ideal or pulsed), so the same algorithm runs on
ideal and non-ideal devices. The rank-1 terms are handed over as rows of ``(x', δ')`` with
``δ'_i x'_iᵀ`` equal to the term, the magnitude split so that ``max|x'| = max|δ'|`` and neither
pulse train clips first.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config, ConfigError, register_config

__all__ = ["UpdateAlgorithmConfig", "UpdateAlgorithm"]

METHODS = ("sgd", "mbgd", "svd", "sbe")


@register_config
@dataclasses.dataclass
class UpdateAlgorithmConfig(Config):
    """Which rank-1 writes a batch of ``(x, δ)`` pairs becomes.

    Attributes:
        method: ``"sgd"``, ``"mbgd"``, ``"svd"`` or ``"sbe"`` (see :mod:`insitu.update.lowrank`).
        rank: ``k``, the singular pairs written per batch by ``svd`` and ``sbe`` (1 in the paper).
        full_write: for ``mbgd``: write the batch gradient row by row (``a`` rank-1 writes per
            step, the cost of writing a general matrix) instead of as the batch's own rank-1 terms.
    """

    method: str = "sgd"
    rank: int = 1
    full_write: bool = True

    def validate(self) -> None:
        self._check_choice("method", METHODS)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            self._fail("rank", "must be an integer >= 1 (the number of singular pairs written per batch, 1 in Hoskins et al.).")
        if self.rank > 1 and self.method in ("sgd", "mbgd"):
            self._fail("rank", f"applies to method 'svd' or 'sbe' only; '{self.method}' writes its own terms. Use rank 1.")
        if not isinstance(self.full_write, bool):
            self._fail("full_write", "must be true or false.")

    def check_shape(self, out_features: int, in_features: int) -> None:
        """Raise if ``rank`` exceeds what an ``out × in`` array can hold."""
        if self.rank > min(out_features, in_features):
            raise ConfigError(
                f"UpdateAlgorithmConfig.rank = {self.rank}: a {out_features} x {in_features} array has at most "
                f"min(out, in) = {min(out_features, in_features)} singular pairs; choose rank <= {min(out_features, in_features)}."
            )

    def extra_memory(self, out_features: int, in_features: int, batch: int) -> int:
        """Numbers the algorithm holds between the samples of a batch of ``batch`` samples.

        ``sgd``: none at batch 1, else the batch's ``(x, δ)`` (``batch (a + b)``), which wait for
        the step; ``mbgd`` and ``svd``: the accumulated gradient, ``a b``; ``sbe``: the
        estimates, ``k (a + b)``, plus the ``k`` singular values.
        """
        a, b, k = out_features, in_features, self.rank
        if self.method == "sgd":
            return 0 if batch <= 1 else batch * (a + b)
        if self.method == "mbgd" and not self.full_write:
            return min(a * b, batch * (a + b))
        if self.method in ("mbgd", "svd"):
            return a * b
        return k * (a + b) + k


class UpdateAlgorithm:
    """The runtime side of :class:`UpdateAlgorithmConfig` for one tile (holds the SBE warm start).

    Args:
        config: the algorithm.
        out_features, in_features: ``a`` and ``b``, the array's shape.
    """

    def __init__(self, config: UpdateAlgorithmConfig, out_features: int, in_features: int):
        config.check_shape(out_features, in_features)
        self.config = config
        self.out_features = out_features
        self.in_features = in_features
        # SBE estimates carried from batch to batch: X (b, k), Δ (a, k) unnormalised, S (k, k).
        self.x_estimate: torch.Tensor | None = None
        self.d_estimate: torch.Tensor | None = None
        self.s_estimate: torch.Tensor | None = None

    def writes(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank-1 writes for a batch: ``(x', δ')`` with ``Σ_i δ'_i x'_iᵀ`` the update direction.

        Args:
            x: ``(n, in)`` inputs of the batch.
            d: ``(n, out)`` errors of the batch.

        Returns:
            ``x'`` ``(m, in)`` and ``δ'`` ``(m, out)``: ``m`` rank-1 writes (``n`` for sgd, ``a``
            for a full mbgd write, ``k`` for svd and sbe).
        """
        method, k, n = self.config.method, self.config.rank, x.shape[0]
        if method == "sgd" or (method == "mbgd" and not self.config.full_write):
            return x, d
        if method in ("svd", "sbe") and n < k:
            raise ValueError(
                f"A batch of {n} samples has rank at most {n}, fewer than the {k} singular pairs the "
                f"'{method}' update writes; use a batch size >= rank ({k}) or a smaller rank."
            )
        if method == "mbgd":
            return _row_writes(d.t() @ x)
        if method == "svd":
            u, s, v = _top_singular(d, x, k)
        else:
            u, s, v = self._stream(x, d)
        return _split(u, s, v)

    # -- streaming batch eigenupdates ----------------------------------------------------------
    def _stream(self, x: torch.Tensor, d: torch.Tensor):
        """Stream the batch through the estimates; return ``(u (a,k), s (k,), v (b,k))`` for ``G``."""
        n, k = x.shape[0], self.config.rank
        work = torch.float64  # the running averages are long sums of small products
        x64, d64 = x.to(work), d.to(work)
        if self.x_estimate is None:
            self._start(x64, d64)
        # .to(x): the estimates follow the tile if it moved to another device since the last batch.
        big_x, big_d, big_s = (t.to(device=x.device, dtype=work) for t in (self.x_estimate, self.d_estimate, self.s_estimate))
        if k == 1:
            big_x, big_d, big_s = _stream_rank1(x64, d64, big_x[:, 0], big_d[:, 0], big_s[0, 0])
            big_x, big_d, big_s = big_x.unsqueeze(1), big_d.unsqueeze(1), big_s.view(1, 1)
        else:
            big_x, big_d, big_s = _stream_subspace(x64, d64, big_x, big_d, big_s)
        dtype = x.dtype
        self.x_estimate, self.d_estimate, self.s_estimate = big_x.to(dtype), big_d.to(dtype), big_s.to(dtype)
        # G / n ≈ Q_Δ S Q_Xᵀ; diagonalise the small S to get k rank-1 terms.
        q_x, q_d = _orthonormal(big_x), _orthonormal(big_d)
        if k == 1:
            u, s, v = q_d, big_s.view(1), q_x
        else:
            su, ss, svh = torch.linalg.svd(big_s)
            u, s, v = q_d @ su, ss, q_x @ svh.t()
        return u.to(dtype), (s * n).to(dtype), v.to(dtype)

    def _start(self, x: torch.Tensor, d: torch.Tensor) -> None:
        """First batch: start from its leading samples (no earlier estimate to warm-start from)."""
        k = self.config.rank
        self.x_estimate = x[:k].t().contiguous()
        self.d_estimate = d[:k].t().contiguous()
        self.s_estimate = torch.zeros((k, k), dtype=x.dtype, device=x.device)

    def state_dict(self) -> dict:
        return {"x": self.x_estimate, "d": self.d_estimate, "s": self.s_estimate}

    def load_state_dict(self, state: dict) -> None:
        self.x_estimate, self.d_estimate, self.s_estimate = state["x"], state["d"], state["s"]


def _stream_rank1(x, d, big_x, big_d, sigma):
    """The paper's k = 1 recursion over the samples of one batch (float64 vectors).

    The recursion is sequential over samples, so its cost is per-operation overhead: on the CPU it
    runs in NumPy (about 5x less overhead per small vector operation than PyTorch).
    """
    if x.device.type == "cpu":
        out = _stream_rank1_numpy(x.numpy(), d.numpy(), big_x.numpy().copy(), big_d.numpy().copy(), float(sigma))
        return torch.from_numpy(out[0]), torch.from_numpy(out[1]), torch.tensor(out[2], dtype=x.dtype)
    return _stream_rank1_torch(x, d, big_x, big_d, sigma)


def _stream_rank1_torch(x, d, big_x, big_d, sigma):
    """:func:`_stream_rank1` in PyTorch (for tensors on an accelerator)."""
    tiny = torch.finfo(x.dtype).tiny
    for j in range(x.shape[0]):
        keep, new = (j + 1) / (j + 2), 1 / (j + 2)  # the warm start counts as sample 1
        xj, dj = x[j], d[j]
        d_proj = torch.dot(dj, big_d) / big_d.norm().clamp_min(tiny)
        big_x = big_x * keep + xj * (d_proj * new)
        x_proj = torch.dot(xj, big_x) / big_x.norm().clamp_min(tiny)
        big_d = big_d * keep + dj * (x_proj * new)
        d_proj_new = torch.dot(dj, big_d) / big_d.norm().clamp_min(tiny)
        sigma = sigma * keep + x_proj * d_proj_new * new
    return big_x, big_d, sigma


def _stream_rank1_numpy(x, d, big_x, big_d, sigma, trace: list | None = None):
    """:func:`_stream_rank1` on NumPy arrays (same operations, same order). ``trace``, if given,
    receives ``(X, Δ)`` after every sample (for :func:`sbe_trace`)."""
    import numpy as np

    tiny = np.finfo(x.dtype).tiny
    for j in range(x.shape[0]):
        keep, new = (j + 1) / (j + 2), 1 / (j + 2)
        xj, dj = x[j], d[j]
        d_proj = dj.dot(big_d) / max(np.sqrt(big_d.dot(big_d)), tiny)
        big_x = big_x * keep + xj * (d_proj * new)
        x_proj = xj.dot(big_x) / max(np.sqrt(big_x.dot(big_x)), tiny)
        big_d = big_d * keep + dj * (x_proj * new)
        d_proj_new = dj.dot(big_d) / max(np.sqrt(big_d.dot(big_d)), tiny)
        sigma = sigma * keep + x_proj * d_proj_new * new
        if trace is not None:
            trace.append((big_x, big_d))
    return big_x, big_d, sigma


def sbe_trace(x: torch.Tensor, d: torch.Tensor, x_estimate: torch.Tensor, d_estimate: torch.Tensor):
    """The rank-1 SBE estimate after every sample of one batch, for analysis (how the streamed
    singular vectors converge within a batch, Hoskins et al. 2019).

    Args:
        x: ``(n, in)`` and d: ``(n, out)``: the batch.
        x_estimate, d_estimate: the warm start, ``(in,)`` and ``(out,)`` (e.g. an
            :class:`UpdateAlgorithm`'s ``x_estimate[:, 0]`` after the previous batch).

    Returns:
        ``(X, Δ)``: ``(n, in)`` and ``(n, out)`` float64 tensors, row ``j`` the unnormalised
        estimate after sample ``j`` (the same recursion and operations as the update).
    """
    import numpy as np

    trace: list = []
    _stream_rank1_numpy(
        x.detach().double().cpu().numpy(), d.detach().double().cpu().numpy(),
        x_estimate.detach().double().cpu().numpy().copy(), d_estimate.detach().double().cpu().numpy().copy(), 0.0, trace,
    )
    return torch.from_numpy(np.stack([t[0] for t in trace])), torch.from_numpy(np.stack([t[1] for t in trace]))


def _stream_subspace(x, d, big_x, big_d, big_s):
    """k > 1: the same recursion on orthonormalised subspaces (Oja-style bi-iteration)."""
    for j in range(x.shape[0]):
        keep, new = (j + 1) / (j + 2), 1 / (j + 2)
        xj, dj = x[j], d[j]
        d_proj = _orthonormal(big_d).t() @ dj  # (k,)
        big_x = big_x * keep + torch.outer(xj, d_proj) * new
        q_x = _orthonormal(big_x)
        x_proj = q_x.t() @ xj
        big_d = big_d * keep + torch.outer(dj, x_proj) * new
        d_proj_new = _orthonormal(big_d).t() @ dj
        big_s = big_s * keep + torch.outer(d_proj_new, x_proj) * new
    return big_x, big_d, big_s


def _orthonormal(m: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of ``m`` ``(rows, k)`` with ``Qᵀ m`` upper triangular, positive diagonal.

    The sign convention keeps column ``i`` of ``Q`` pointing along column ``i`` of ``m``, so that
    the basis does not flip from sample to sample (for ``k = 1`` it is ``m / ‖m‖``).
    """
    if m.shape[1] == 1:
        return m / m.norm().clamp_min(torch.finfo(m.dtype).tiny)
    q, r = torch.linalg.qr(m)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return q * signs


def _top_singular(d: torch.Tensor, x: torch.Tensor, k: int):
    """Exact top-``k`` singular triplets of ``G = dᵀ x`` (``a × b``): ``u (a,k)``, ``s (k,)``, ``v (b,k)``.

    A small batch (``n`` well below ``a`` and ``b``) goes through thin QR factors,
    ``dᵀ = Q_d R_d``, ``xᵀ = Q_x R_x``, so ``G = Q_d (R_d R_xᵀ) Q_xᵀ`` and only the ``n × n`` core
    is decomposed: the same triplets at ``O((a + b) n²)`` instead of ``O(a b min(a, b))``.
    """
    n, a, b = x.shape[0], d.shape[1], x.shape[1]
    if 2 * n <= min(a, b):
        q_d, r_d = torch.linalg.qr(d.t())
        q_x, r_x = torch.linalg.qr(x.t())
        u, s, vh = torch.linalg.svd(r_d @ r_x.t())
        return q_d @ u[:, :k], s[:k], q_x @ vh[:k].t()
    u, s, vh = torch.linalg.svd(d.t() @ x, full_matrices=False)
    return u[:, :k], s[:k], vh[:k].t()


def _split(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor):
    """Rank-1 terms ``s_i u_i v_iᵀ`` as rows ``(x'_i, δ'_i)``, sign on δ'.

    The magnitude is split so that ``max|x'_i| = max|δ'_i|``: both pulse trains then peak at the
    same probability, as update management would arrange, and neither clips first. (Splitting by
    the vectors' norms instead would leave, for MNIST-sized inputs, the error side ~10x larger
    than the input side and clip its pulse probabilities.)
    """
    tiny = torch.finfo(s.dtype).tiny
    u_max, v_max = u.abs().amax(dim=0).clamp_min(tiny), v.abs().amax(dim=0).clamp_min(tiny)  # (k,)
    x_scale = (s.abs() * u_max / v_max).sqrt()
    d_scale = (s.abs() * v_max / u_max).sqrt() * torch.sign(s)
    return (v * x_scale).t().contiguous(), (u * d_scale).t().contiguous()


def _row_writes(g: torch.Tensor):
    """A full matrix ``g`` ``(a, b)`` as ``a`` row writes ``e_r g_rᵀ`` (magnitude split evenly)."""
    scale = g.abs().amax(dim=1).sqrt()  # (a,)
    x = g / scale.clamp_min(torch.finfo(g.dtype).tiny).unsqueeze(1)
    d = torch.diag(scale)
    return x, d
