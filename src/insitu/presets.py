"""Named configurations of the papers, one function each, all returning a :class:`TileConfig`.

``get_preset("gokmen-vlasov-2016")`` returns a fresh, validated config; ``PRESETS`` lists them.
Each docstring says where every number comes from (``shared/reference/papers.md`` tags: [V] read
in a source, [R] recalled from the paper).
"""

from __future__ import annotations

import difflib
from typing import Callable

from .config import ConfigError
from .devices import (
    ConstantStepDevice,
    ExpStepDevice,
    IdealDevice,
    LinearStepDevice,
    PowStepDevice,
    SoftBoundsReferenceDevice,
)
from .io import IOConfig
from .tile import TileConfig
from .update import PulseUpdateConfig

__all__ = ["PRESETS", "get_preset", "preset_names", "peer_io", "peer_update", "with_peer_periphery"]


def floating_point() -> TileConfig:
    """Exact floating-point weights and products: the software baseline."""
    return TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())


def gokmen_vlasov_2016() -> TileConfig:
    """The RPU baseline of Gokmen & Vlasov 2016 (Front. Neurosci. 10:333), Table 1.

    Device: constant step ``dw_min`` = 0.001, bounds ±0.6, 30% device-to-device spread of the
    step and of the bounds, 30% cycle-to-cycle spread of each step [R; equal to aihwkit's
    ``ConstantStepDevice`` defaults, V]; up/down imbalance 0 on average with 1% device-to-device
    spread (a 2% spread of the up/down ratio) [R]. Pulse trains of BL = 10, so
    ``Cx = Cd = sqrt(0.01 / (10 · 0.001)) = 1`` at lr 0.01. Forward and backward: output noise
    σ = 0.06 and output bound α = 12, inputs bounded to ±1, no DAC/ADC quantisation, and no
    noise, bound or update management (those came with the 2017 paper).
    """
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0)
    return TileConfig(
        device=ConstantStepDevice(
            dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0, up_down_dtod=0.01,
            w_max=0.6, w_min=-0.6, w_max_dtod=0.3, w_min_dtod=0.3,
        ),
        forward=io,
        backward=io.replace(),
        update=PulseUpdateConfig(pulse_type="stochastic", bl=10, update_management=False, dynamic_bl=False),
    )


def gokmen_2017_cnn_nm_bm() -> TileConfig:
    """2016 RPU device with noise management (both passes) and bound management (forward).

    Gokmen, Onen & Haensch 2017 (Front. Neurosci. 11:538): inputs of every analog product are
    divided by their maximum before the DAC and the result multiplied back (noise management,
    crucial for the small errors of the backward pass); a forward product whose outputs
    saturate is repeated with the input halved (bound management) [V: aihwkit's ABS_MAX and
    ITERATIVE options implement the same; attribution to the paper R].
    """
    base = gokmen_vlasov_2016()
    return base.replace(
        forward=base.forward.replace(noise_management="abs_max", bound_management="iterative"),
        backward=base.backward.replace(noise_management="abs_max"),
    )


def gokmen_2017_cnn_nm_bm_um() -> TileConfig:
    """``gokmen-2017-cnn-nm-bm`` plus update management (``Cx``, ``Cd`` rebalanced by sqrt(max|δ|/max|x|))."""
    base = gokmen_2017_cnn_nm_bm()
    return base.replace(update=base.update.replace(update_management=True))


def gokmen_2017_cnn_nm_bm_um_4d() -> TileConfig:
    """``gokmen-2017-cnn-nm-bm-um`` with unit cells of 4 devices per weight (mean readout).

    The paper reduces device variability by several devices per weight, selectively on the
    convolutional layers; this preset is meant for them (``--conv-preset``). The paper's exact
    device counts are not recovered here [R: up to 13 on K1]; 4 is this project's choice.
    """
    return gokmen_2017_cnn_nm_bm_um().replace(devices_per_weight=4)


def gokmen_2017_cnn_nm_bm_um_13d() -> TileConfig:
    """``gokmen-2017-cnn-nm-bm-um`` with unit cells of 13 devices per weight (mean readout).

    The paper's strongest variation reduction: up to 13 devices per weight on the first
    convolution K1 (papers.md §2.4, [R, low confidence]), whose 16 x 26 array is the smallest and
    the most reused (576 patches an image). Meant for K1 only:
    ``--conv-preset gokmen-2017-cnn-nm-bm-um-13d,gokmen-2017-cnn-nm-bm-um-4d``.
    """
    return gokmen_2017_cnn_nm_bm_um().replace(devices_per_weight=13)


# -- Cristiano, Giordano, Ambrogio, ..., Burr 2018 (J. Appl. Phys. 124, 151901): two PCM pairs --------
# The paper's device tables and thresholds were not recovered (papers.md §4: [R]); the numbers below
# are this project's choices, in weight units, sized for the 784-250-125-10 MNIST network trained at
# lr 0.1 with batch 1. What is from the paper: W = F(G⁺ − G⁻) + (g⁺ − g⁻), F = 3 (Ambrogio 2018, [R]),
# open-loop updates of the LSP, closed-loop transfer to the MSP, polarity inversion, a saturating
# response with a steep initial jump.


def _cristiano_pcm(nonlinearity: float, initial_jump: float, g_max: float, dg: float):
    """A PCM device with 10% spread of G_max, 20% of the step, 30% pulse-to-pulse noise."""
    from .devices import PCMDevice

    return PCMDevice(
        g_max=g_max, g_max_dtod=0.1, dg=dg, dg_dtod=0.2, dg_std=0.3, nonlinearity=nonlinearity, initial_jump=initial_jump,
    )


def cristiano_2018_two_pair() -> TileConfig:
    """Two PCM pairs, F = 3: near-linear LSP, strongly saturating MSP, transfer every 1000 examples.

    LSP: ``g_max`` 0.5, ``dg`` 0.005 (about 100 gradual levels), nonlinearity 0.2, an immediate
    initial jump of 2% of ``g_max``. MSP: ``g_max`` 1, ``dg`` 0.02, nonlinearity 2 (strongly
    saturating) and an immediate jump of 10%. Both: 10% device-to-device spread of ``G_max``, 20% of
    the step, 30% pulse-to-pulse. Closed-loop tuning to 0.02 in 100 pulses at most, polarity
    inversion at every transfer, LSP saturation checked every 100 examples. Pulse trains BL 10 with
    update management (Gokmen, Onen & Haensch 2017). All device numbers are this project's choices.
    The cell (:class:`~insitu.cells.TwoPairPCMCell`) owns its devices: the tile's ``device`` is not used.

    The whole array is transferred at once and verify reads are exact (the cell's defaults). The
    hardware's column-by-column transfer and noisy verify reads are fields of the cell, e.g.::

        preset = get_preset("cristiano-2018-two-pair")
        preset.replace(cell=preset.cell.replace(transfer_mode="columns", clt_read_noise=0.01))
    """
    from .cells import TwoPairPCMCell

    return TileConfig(
        cell=TwoPairPCMCell(
            lsp=_cristiano_pcm(nonlinearity=0.2, initial_jump=0.02, g_max=0.5, dg=0.005),
            msp=_cristiano_pcm(nonlinearity=2.0, initial_jump=0.1, g_max=1.0, dg=0.02),
            gain_factor=3.0,
            transfer_every=1000,
            polarity_inversion=True,
            clt_tolerance=0.02,
            clt_max_iterations=100,
        ),
        update=PulseUpdateConfig(pulse_type="stochastic", bl=10, update_management=True),
    )


def cristiano_2018_same_device() -> TileConfig:
    """Two pairs of the *same* strongly saturating PCM device (the MSP device of ``-two-pair``) as LSP and MSP."""
    base = cristiano_2018_two_pair()
    return base.replace(cell=base.cell.replace(lsp=base.cell.msp.replace(g_max=0.5, dg=0.005)))


def cristiano_2018_single_pair() -> TileConfig:
    """Single-pair PCM baseline W = g⁺ − g⁻ of the saturating device, refreshed when a device saturates.

    The device of ``cristiano-2018-same-device`` with the range of the MSP (``g_max`` 1, so weights
    reach ±1) and the LSP's step (``dg`` 0.005); a pair is RESET and reprogrammed by closed-loop
    tuning when one of its devices exceeds 90% of its ``G_max`` (checked every 100 examples).
    """
    base = cristiano_2018_same_device()
    return base.replace(cell=base.cell.replace(msp=None, lsp=base.cell.msp.replace(g_max=1.0, dg=0.005)))


def pow_step_2016_io() -> TileConfig:
    """A power-law step device (aihwkit's ``PowStepDevice`` defaults [V: algorithms.md §1.2]:
    γ = 1 with 10 % device-to-device spread, ``dw_min`` 0.001 at the far bound, bounds ±0.6 with
    30 % spread, 30 % cycle-to-cycle spread) in the 2016 periphery (BL 10, σ 0.06, α 12). Its
    nominal step is the step at mid-range, ``0.001 · 0.5^γ`` = 0.0005, so ``Cx = Cd = 1.41`` at lr
    0.01. About 1,200 states over the weight range (2 · 0.6 / 0.0005 · 0.5, [D])."""
    base = gokmen_vlasov_2016()
    return base.replace(device=PowStepDevice(dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down_dtod=0.01))


# -- aihwkit's published device presets (algorithms.md §8, read in the peer's presets/devices.py [V]) ----
# Each device in the 2016 periphery of ``gokmen-vlasov-2016`` (BL 10, output noise 0.06, bound 12, no
# DAC/ADC, no noise/bound/update management), so that the families compare on the same footing. The
# peer wraps them in its own periphery instead (7-bit DAC, 9-bit ADC, out_noise 0.1, out_bound 20,
# noise and bound management, BL 31 with update and BL management; §8 "PresetIOParameters") [V]; that
# periphery is ``with_peer_periphery`` below, and the ``<device>-peer-io`` presets use it.
# Number of states = (w_max - w_min) / dw_min (the peer's definition). Left off, so that the committed
# numbers stay as measured (device effects, docs/devices.md; switch them on with the device's fields):
# write noise (ReRAM), the capacitor's decay (lifetime 1e6 mini-batches).


def _aihwkit_2016_io(device) -> TileConfig:
    return gokmen_vlasov_2016().replace(device=device)


def reram_es_2016_io() -> TileConfig:
    """aihwkit's ``ReRamESPresetDevice``: ReRAM with exponentially saturating steps (ExpStep) [V: §8].

    ``dw_min`` 0.00135, bounds ±1, ``up_down`` 0.259359, ``dw_min_dtod`` 0.2, ``up_down_dtod``
    0.05, bound spread 0.3, cycle-to-cycle ``dw_min_std`` 5.0 (the peer's value: five steps of
    spread a pulse), ``a = b = -0.5``, ``γ_up = γ_down = 5``, ``A_up`` -1.18445, ``A_down`` -0.081404;
    write noise (75 steps: ``write_noise_std=75``) left off. The peer's code shrinks only the down step
    (``dw_up = dw_min``, ``dw_down = dw_min (1 - up_down)``); insitu's ``up_down`` is symmetric, so
    the same two steps are ``dw_min' = dw_min (1 - u/2)`` = 0.0011749 and ``up_down' = u / (2 - u)``
    = 0.14900. About 1,480 states (2 / 0.00135; the peer's docs: 1000 steps).
    """
    u = 0.259359
    return _aihwkit_2016_io(
        ExpStepDevice(
            dw_min=0.00135 * (1 - u / 2), up_down=u / (2 - u), dw_min_dtod=0.2, up_down_dtod=0.05,
            w_max=1.0, w_min=-1.0, w_max_dtod=0.3, w_min_dtod=0.3, dw_min_std=5.0,
            a=-0.5, b=-0.5, gamma_up=5.0, gamma_down=5.0, A_up=-1.18445, A_down=-0.081404,
        )
    )


def reram_sb_2016_io() -> TileConfig:
    """aihwkit's ``ReRamSBPresetDevice``: ReRAM with soft bounds read against a reference [V: §8].

    ``SoftBoundsReferenceDevice``: ``dw_min`` 0.002, bounds 1.25 / -0.75 with spreads 0.3/1.25 and
    0.3/0.75 (relative 0.24 and 0.4), ``dw_min_dtod`` 0.3, ``up_down_dtod`` 0.01, additive
    cycle-to-cycle noise ``dw_min_std`` 3.75 (``mult_noise`` False), reference 0 and no symmetry
    point subtraction (the mean device's symmetry point is 0 already, §2); write noise (56 steps:
    ``write_noise_std=56``) left off. 1,000 states (2 / 0.002).
    """
    return _aihwkit_2016_io(
        SoftBoundsReferenceDevice(
            dw_min=0.002, up_down=0.0, dw_min_dtod=0.3, up_down_dtod=0.01, w_max=1.25, w_min=-0.75,
            w_max_dtod=0.3 / 1.25, w_min_dtod=0.3 / 0.75, dw_min_std=3.75, mult_noise=False,
        )
    )


def ecram_2016_io() -> TileConfig:
    """aihwkit's ``EcRamPresetDevice``: ECRAM, a linear step [V: §8].

    ``LinearStepDevice``: ``dw_min`` 0.002, bounds 1.1724 / -0.8276 (spread 0.05), ``dw_min_dtod``
    0.1, ``up_down_dtod`` 0.01, ``dw_min_std`` 0.3 (multiplicative), ``γ_up`` 0.1153, ``γ_down``
    0.5085 with spread 0.05; symmetry point at 0. The peer takes the slopes relative to the mean
    bound (``mean_bound_reference``), insitu to each device's bound. 1,000 states (2 / 0.002).
    """
    return _aihwkit_2016_io(
        LinearStepDevice(
            dw_min=0.002, up_down=0.0, dw_min_dtod=0.1, up_down_dtod=0.01, w_max=1.1724, w_min=-0.8276,
            w_max_dtod=0.05, w_min_dtod=0.05, dw_min_std=0.3, gamma_up=0.1153, gamma_down=0.5085, gamma_dtod=0.05,
        )
    )


def ecram_mo_2016_io() -> TileConfig:
    """aihwkit's ``EcRamMOPresetDevice``: metal-oxide ECRAM, a linear step [V: §8].

    ``LinearStepDevice``: ``dw_min`` 2.8214e-4, bounds 1.1714 / -0.8286 (spread 0.05),
    ``dw_min_dtod`` 0.1, ``up_down_dtod`` 0.01, ``dw_min_std`` 2.0 (multiplicative), ``γ_up``
    0.4152, ``γ_down`` 0.7342 with spread 0.05; slopes relative to each device's bound (the peer:
    the mean bound). About 7,089 states (2 / 2.8214e-4).
    """
    return _aihwkit_2016_io(
        LinearStepDevice(
            dw_min=2.8214e-4, up_down=0.0, dw_min_dtod=0.1, up_down_dtod=0.01, w_max=1.1714, w_min=-0.8286,
            w_max_dtod=0.05, w_min_dtod=0.05, dw_min_std=2.0, gamma_up=0.4152, gamma_down=0.7342, gamma_dtod=0.05,
        )
    )


def capacitor_2016_io() -> TileConfig:
    """aihwkit's ``CapacitorPresetDevice``: a capacitor-based cell, a nearly constant linear step [V: §8].

    ``LinearStepDevice``: ``dw_min`` 0.005, bounds ±1 (spread 0.07), ``dw_min_dtod`` 0.1,
    ``up_down_dtod`` 0.06, ``dw_min_std`` 0.3, ``γ_up = γ_down`` 0.05 with spread 0.01. Not
    modelled: the peer's additive noise (``mult_noise`` False; insitu's linear step is
    multiplicative, the same to 5 % at γ 0.05), its slopes relative to the mean bound. Left off:
    the leak (``lifetime=1e6``, ``lifetime_dtod=0.3``). 400 states (2 / 0.005).
    """
    return _aihwkit_2016_io(
        LinearStepDevice(
            dw_min=0.005, up_down=0.0, dw_min_dtod=0.1, up_down_dtod=0.06, w_max=1.0, w_min=-1.0,
            w_max_dtod=0.07, w_min_dtod=0.07, dw_min_std=0.3, gamma_up=0.05, gamma_down=0.05, gamma_dtod=0.01,
        )
    )


def idealized_2016_io() -> TileConfig:
    """aihwkit's ``IdealizedPresetDevice``: a constant step with many states [V: §8].

    ``ConstantStepDevice``: ``dw_min`` 0.0002, bounds ±1 (spread 0.3), ``dw_min_dtod`` 0.3,
    ``up_down_dtod`` 0, ``dw_min_std`` 0.3. 10,000 states (2 / 0.0002).
    """
    return _aihwkit_2016_io(
        ConstantStepDevice(
            dw_min=0.0002, up_down=0.0, dw_min_dtod=0.3, up_down_dtod=0.0, w_max=1.0, w_min=-1.0,
            w_max_dtod=0.3, w_min_dtod=0.3, dw_min_std=0.3,
        )
    )


# -- conductance pairs as ordinary tile devices (devices/conductance_pair.py) --------------------------


def pcm_pair_2016_io() -> TileConfig:
    """A differential pair of the PCM device of the ``cristiano-2018-*`` presets as an ordinary tile
    device (``PCMPairDevice``), ``w = (G⁺ − G⁻) / g_scale``, in the 2016 periphery of
    ``gokmen-vlasov-2016`` (BL 10, output noise 0.06, bound 12, no management).

    The device is the one of ``cristiano-2018-single-pair`` (Cristiano et al. 2018, J. Appl. Phys.
    124, 151901: a saturating, SET-only response with a steep initial jump; the numbers are this
    project's choices, see the comment above those presets [R]): ``g_max`` 1 (10 % spread), ``dg``
    0.005 (20 % spread), pulse-to-pulse spread 30 %, nonlinearity 2, immediate initial jump of 10 %
    of ``g_max``. ``w_max`` 1, so ``g_scale`` = 1 and ``w = G⁺ − G⁻`` as in the single-pair cell;
    the nominal step is ``dg`` = 0.005 (``Cx = Cd = 0.45`` at lr 0.01). States: 200 gradual steps
    of ``dg`` per device over its range (``g_max / dg``; fewer in effect, as the steps shrink as
    ``(1 − G/g_max)²``), 400 across the weight range ±1. Refresh as the single-pair cell's
    saturation check: every 100 updates (optimizer steps; 100 examples at batch 1), pairs with a
    device above 90 % of its range are RESET and programmed back to within 0.02 (the cell's
    closed-loop tolerance), 1,000 verify pulses at most.
    """
    device = cristiano_2018_single_pair().cell.lsp
    from .devices import PCMPairDevice

    return gokmen_vlasov_2016().replace(
        device=PCMPairDevice(
            device=device, w_max=1.0, refresh_every=100, refresh_threshold=0.9, refresh_tolerance=0.02, refresh_max_pulses=1000,
        )
    )


def jump_table_pair_2016_io() -> TileConfig:
    """A differential pair of a ``JumpTableDevice`` as an ordinary tile device
    (``JumpTablePairDevice``) in the 2016 periphery of ``gokmen-vlasov-2016``.

    Cristiano et al. 2018 (J. Appl. Phys. 124, 151901) describe measured devices by jump tables
    (the distribution of ΔG per pulse for each conductance); their tables were not recovered
    (papers.md §4 [R]), so this table is this project's choice, shaped like a saturating PCM
    device: conductance range [0, 1] in four bins with mean SET steps 0.008, 0.006, 0.004, 0.002
    and spreads 0.003, 0.0025, 0.002, 0.0015, and a 20 % device-to-device spread of the step
    gain. ``w_max`` 1 (``g_scale`` 1); nominal step 0.008 (the first bin). States: about 260 SET
    pulses from RESET to ``g_max`` (0.25/0.008 + 0.25/0.006 + 0.25/0.004 + 0.25/0.002), twice
    that across the weight range ±1. Refresh as ``pcm-pair-2016-io`` (every 100 updates, 90 %,
    tolerance 0.02, 1,000 pulses at most).
    """
    from .devices import JumpTableDevice, JumpTablePairDevice

    table = JumpTableDevice(
        bin_edges=(0.0, 0.25, 0.5, 0.75, 1.0), mean=(0.008, 0.006, 0.004, 0.002), std=(0.003, 0.0025, 0.002, 0.0015),
        gain_dtod=0.2,
    )
    return gokmen_vlasov_2016().replace(
        device=JumpTablePairDevice(
            device=table, w_max=1.0, refresh_every=100, refresh_threshold=0.9, refresh_tolerance=0.02, refresh_max_pulses=1000,
        )
    )


#: The peer's PCM device (``_peer_pcm_device``, aihwkit's ``PCMPresetDevice``, which IBM fitted to
#: measured PCM) measured as a SET-only jump table on a normalised range [0, 1]:
#: ``jump_table_from_device(_peer_pcm_device(), bins=8, g_scale=1.0)`` (20 trains of 400 SET pulses
#: from RESET, its mean device with its pulse-to-pulse noise; ``tests/test_jump_table.py`` checks that
#: these numbers are that function's output). The steps fall from 0.12 to 0.005 of the range; the
#: spread is 0.05-0.07 of the range at every conductance (the peer's additive noise dominates); the
#: last bin's mean is negative because the device is clipped at its upper bound there.
PEER_PCM_TABLE_MEAN = (0.1234, 0.07425, 0.03028, 0.02153, 0.01946, 0.00906, 0.0045, -0.01491)
PEER_PCM_TABLE_STD = (0.07053, 0.0604, 0.04986, 0.05605, 0.05684, 0.06374, 0.06764, 0.05832)


def _peer_pcm_table(g_max: float):
    """The peer's PCM device as a jump table on ``[0, g_max]`` with its 20 % device-to-device
    spread of the step (``dw_min_dtod``) as the table's gain spread."""
    from .devices import JumpTableDevice

    bins = len(PEER_PCM_TABLE_MEAN)
    return JumpTableDevice(
        bin_edges=tuple(g_max * k / bins for k in range(bins + 1)),
        mean=tuple(g_max * m for m in PEER_PCM_TABLE_MEAN),
        std=tuple(g_max * v for v in PEER_PCM_TABLE_STD),
        gain_dtod=0.2,
    )


def cristiano_2018_peer_pcm_table() -> TileConfig:
    """``cristiano-2018-two-pair`` with both pairs made of a measured-like PCM device: the peer's
    PCM preset device (fitted by IBM to measured PCM) measured into a jump table
    (:data:`PEER_PCM_TABLE_MEAN`), scaled to each pair's range (LSP ``[0, 0.5]``, MSP ``[0, 1]``).

    Where the preset's LSP is near-linear with about 100 levels, this one takes steps of 6 % of its
    range after RESET falling to 0.2 % near saturation, with a pulse-to-pulse spread of 3 % of the
    range: the LSP-linearity requirement of Cristiano et al. 2018 tested with a realistic device.
    """
    base = cristiano_2018_two_pair()
    return base.replace(cell=base.cell.replace(lsp=_peer_pcm_table(0.5), msp=_peer_pcm_table(1.0)))


def _peer_pcm_device():
    # aihwkit's PCMPresetDevice [V: algorithms.md §8]; up_down 0, so the up/down conventions agree.
    from .devices import ExpStepDevice

    return ExpStepDevice(
        dw_min=0.01, up_down=0.0, dw_min_dtod=0.2, up_down_dtod=0.05, w_max=2.0, w_min=0.0, w_max_dtod=0.1,
        w_min_dtod=0.0, dw_min_std=0.6, a=-1.0, b=0.0, gamma_up=2.5, gamma_down=2.5, A_up=-27.235, A_down=-2.235,
        dw_min_std_add=0.042, dw_min_std_slope=0.108, reset=0.01, reset_dtod=0.02, reset_std=0.01,
    )


def pcm_2016_io() -> TileConfig:
    """aihwkit's ``PCMPreset``: a one-sided pair of ``PCMPresetDevice`` with refresh [V: §8], in the
    2016 periphery of ``gokmen-vlasov-2016`` (``pcm-peer-io``: in the peer's own).

    The member (``ExpStepDevice`` with ``w_min = 0``): ``dw_min`` 0.01, range [0, 2] (``w_max``
    spread 0.1, ``w_min`` none), ``dw_min_dtod`` 0.2, ``up_down_dtod`` 0.05, ``a`` -1, ``b`` 0,
    ``γ`` 2.5, ``A_up`` -27.235, ``A_down`` -2.235 (only up steps are used: an up step is
    ``0.01 (1 + 27.235 e^{-2.5 g})``, 0.28 at ``g = 0`` falling to 0.012 at ``g = 2``: PCM's
    steep first SET pulses), cycle-to-cycle ``dw_min_std`` 0.6 with the complex noise
    ``dw_min_std_add`` 0.042 and ``dw_min_std_slope`` 0.108, reset 0.01 (``reset_dtod`` 0.02,
    ``reset_std`` 0.01, the peer's class default). The pair (``OneSidedPairDevice``): ``w = g⁺ −
    g⁻`` (``w_max`` 2, ``g_scale`` 1), refreshed after every update (``refresh_every`` 1, the peer's
    units_in_mbatch) where the larger read exceeds 75 % and the smaller 25 % of the range; the
    reads with the peer's output noise 0.1 (its ``refresh_forward`` is its PresetIO; the ADC not
    modelled), the rewrite open loop with at most 31 pulses (its ``refresh_update`` has BL 31).
    Nominal step (sets ``Cx``, ``Cd``): the peer's down step at 0, ``0.01 (1 + 2.235)`` = 0.03235.
    States: 200 steps of ``dw_min`` over the range; in effect 71 noise-free SET pulses take a
    member from 0 to 2 (35 to the refresh threshold 1.5).
    """
    from .devices import OneSidedPairDevice

    return gokmen_vlasov_2016().replace(
        device=OneSidedPairDevice(
            device=_peer_pcm_device(), w_max=2.0, refresh_every=1, refresh_upper=0.75, refresh_lower=0.25,
            refresh_read_noise=0.1, refresh_max_pulses=31,
        )
    )


# -- the peer's preset periphery (aihwkit's PresetIOParameters / PresetUpdateParameters) ---------------


def peer_io() -> IOConfig:
    """aihwkit's ``PresetIOParameters`` as an :class:`IOConfig` [V: algorithms.md §8, papers.md §6.4].

    Field by field: ``inp_res`` 1/126 (7-bit DAC) -> ``inp_bits`` 7 over ``inp_bound`` 1;
    ``out_res`` 1/510 (9-bit ADC) -> ``out_bits`` 9 over ``out_bound`` 20; ``out_noise`` 0.1;
    ``noise_management`` ABS_MAX -> ``"abs_max"`` (``nm_thres`` 0: no limit); ``bound_management``
    ITERATIVE -> ``"iterative"``; ``inp_noise``, ``w_noise``, ``ir_drop`` 0 as in the peer.
    Where the mapping is not exact: insitu's ``b`` bits are ``2**b - 1`` levels over
    ``±bound``, a step of ``2 bound / (2**b - 2)``; the peer's resolution 1/126 (1/510) is read as
    the same step relative to the full range (the project's reading, as for the transfer read of
    :mod:`insitu.cells.transfer`; not checked against the peer's C++). The peer's iterative bound
    management stops at a factor ``max_bm_factor`` 1000 or when the input step exceeds
    ``max_bm_res`` 0.25; insitu stops after ``max_bm_iterations`` 10 halvings (a factor 1024) and
    has no resolution stop. The peer's ``bm_test_negative_bound`` (True) is insitu's behaviour
    (saturation tested on ``|y|``).
    """
    return IOConfig(
        inp_bound=1.0, inp_bits=7, out_noise=0.1, out_bound=20.0, out_bits=9,
        noise_management="abs_max", bound_management="iterative", max_bm_iterations=10,
    )


def peer_update() -> PulseUpdateConfig:
    """aihwkit's ``PresetUpdateParameters`` as a :class:`PulseUpdateConfig` [V: papers.md §6.5].

    ``desired_bl`` 31 -> ``bl`` 31; pulse type STOCHASTIC_COMPRESSED -> ``"stochastic"`` (the
    same Bernoulli trains; the peer's compression is a storage format); ``update_management``
    True -> ``update_management`` (``Cx``, ``Cd`` rebalanced by ``sqrt(max|δ| / max|x|)``,
    ``um_grad_scale`` 1); ``update_bl_management`` True -> ``dynamic_bl`` (``BL = ceil(lr
    max|x| max|δ| / dw_min)``, at most 31). Mode ``"sequential"`` (rank-1 updates in order, as
    the peer's pulsed update). Not exact: none known beyond the device's nominal ``dw_min`` that
    both use in the formulas.
    """
    return PulseUpdateConfig(pulse_type="stochastic", bl=31, update_management=True, dynamic_bl=True, mode="sequential")


def with_peer_periphery(config: TileConfig) -> TileConfig:
    """``config`` with its forward and backward IO replaced by :func:`peer_io` and its pulse update
    by :func:`peer_update`: the periphery aihwkit's ``XPreset`` configs wrap their devices in
    (``SingleRPUConfig(device, PresetIOParameters, PresetIOParameters, PresetUpdateParameters)``
    [V: algorithms.md §8]). The device, cell and every other field are kept. The backward pass gets
    the same settings as the forward one, iterative bound management included, as in the peer's
    config (whether the peer's backward pass applies it was not checked)."""
    return config.replace(forward=peer_io(), backward=peer_io(), update=peer_update())


def _peer_io_preset(base: Callable[[], TileConfig], device_name: str) -> Callable[[], TileConfig]:
    def preset() -> TileConfig:
        return with_peer_periphery(base())

    preset.__name__ = base.__name__.replace("_2016_io", "_peer_io")
    preset.__doc__ = (
        f"aihwkit's ``{device_name}`` in the peer's own periphery, as its preset config wraps it [V: §8]:\n\n"
        f"the device of ``{base.__name__.replace('_', '-')}`` (its docstring gives every number) with\n"
        "``with_peer_periphery`` (aihwkit's ``PresetIOParameters``: 7-bit DAC, 9-bit ADC, out_noise 0.1,\n"
        "out_bound 20, noise management abs-max, iterative bound management; ``PresetUpdateParameters``:\n"
        "BL 31 with update management and dynamic BL). States: as the ``-2016-io`` preset.\n"
    )
    return preset


reram_es_peer_io = _peer_io_preset(reram_es_2016_io, "ReRamESPresetDevice")
reram_sb_peer_io = _peer_io_preset(reram_sb_2016_io, "ReRamSBPresetDevice")
ecram_peer_io = _peer_io_preset(ecram_2016_io, "EcRamPresetDevice")
ecram_mo_peer_io = _peer_io_preset(ecram_mo_2016_io, "EcRamMOPresetDevice")
capacitor_peer_io = _peer_io_preset(capacitor_2016_io, "CapacitorPresetDevice")
idealized_peer_io = _peer_io_preset(idealized_2016_io, "IdealizedPresetDevice")
pcm_peer_io = _peer_io_preset(pcm_2016_io, "PCMPreset (OneSidedUnitCell of two PCMPresetDevice)")



# -- the peer's configuration wrappers around its device presets ------------------------------
# aihwkit's presets/configs.py and presets/compounds.py wrap each device preset in a few ways
# (algorithms.md §3-§8 [V:pcfg]): ``X2Preset`` / ``X4Preset`` (a vector unit cell of 2 or 4
# devices, one drawn at random written per update), ``TikiTakaXPreset`` (Tiki-Taka v1),
# ``TTv2XPreset`` (a chopped transfer compound without choppers), ``ChoppedTTv2XPreset``,
# ``AGADXPreset`` and ``MixedPrecisionXPreset``, each in the peer's periphery (``peer_io``,
# ``peer_update``). The rows give the numbers that differ by device [V: algorithms.md §4-§5]:
# TTv2 (fast_lr, auto_granularity, main BL); c-TTv2 (in_chop_prob, fast_lr, auto_granularity,
# main BL); AGAD (in_chop_prob, fast_lr, auto_granularity, tail_weighting, main BL).
_PEER_WRAPPED = {
    "reram-es": (reram_es_2016_io, "ReRamES", (0.5, 1000, 31), (0.01, 0.5, 1000, 31), (0.02, 0.5, 1000, 5.0, 31)),
    "reram-sb": (reram_sb_2016_io, "ReRamSB", (0.5, 1000, 31), (0.01, 0.5, 1000, 31), (0.02, 0.5, 1000, 5.0, 31)),
    "capacitor": (capacitor_2016_io, "Capacitor", (0.1, 1000, 31), (0.01, 0.1, 1000, 31), (0.01, 0.1, 1000, 20.0, 31)),
    "ecram": (ecram_2016_io, "EcRam", (0.1, 500, 100), (0.01, 1.0, 500, 100), (0.005, 0.1, 750, 50.0, 31)),
    "ecram-mo": (ecram_mo_2016_io, "EcRamMO", (0.1, 500, 100), (0.001, 0.1, 500, 100), (0.005, 0.1, 500, 50.0, 100)),
    "idealized": (idealized_2016_io, "Idealized", (0.1, 500, 100), (0.001, 0.1, 500, 100), (0.005, 0.1, 500, 50.0, 100)),
}


def _transfer_read() -> IOConfig:
    # The transfer read of every wrapper: PresetIO with noise and bound management off.
    return peer_io().replace(noise_management="none", bound_management="none")


def _one_pulse_transfer() -> PulseUpdateConfig:
    # TTv2, c-TTv2, AGAD: transfer writes with BL 1 and no management (at most one pulse a device).
    return PulseUpdateConfig(bl=1, update_management=False, dynamic_bl=False)


def _peer_wrapped(device_key: str, wrapper: str) -> Callable[[], TileConfig]:
    base, peer_name, ttv2, cttv2, agad = _PEER_WRAPPED[device_key]

    def preset() -> TileConfig:
        from .cells import AGADCell, ChoppedTikiTakaCell, MixedPrecisionCell, TikiTakaCell

        config = with_peer_periphery(base())
        device = config.device
        if wrapper in ("2", "4"):
            return config.replace(devices_per_weight=int(wrapper), cell_update="random", cell_readout="sum")
        if wrapper == "mp":
            return config.replace(cell=MixedPrecisionCell())
        if device_key == "reram-sb":  # the peer's SB transfer presets read against the symmetry point
            config = config.replace(device=device.replace(subtract_symmetry_point=True))
        if wrapper == "tiki-taka":
            cell = TikiTakaCell(transfer_io=_transfer_read(), transfer_update=peer_update())
            return config.replace(cell=cell)
        if wrapper == "ttv2":
            fast_lr, granularity, bl = ttv2
            cell = ChoppedTikiTakaCell(
                in_chop_prob=0.0, fast_lr=fast_lr, auto_granularity=float(granularity), auto_scale=True,
                transfer_io=_transfer_read(), transfer_update=_one_pulse_transfer(),
            )
        elif wrapper == "c-ttv2":
            chop, fast_lr, granularity, bl = cttv2
            cell = ChoppedTikiTakaCell(
                in_chop_prob=chop, fast_lr=fast_lr, auto_granularity=float(granularity), auto_scale=True,
                transfer_io=_transfer_read(), transfer_update=_one_pulse_transfer(),
            )
        else:  # agad
            chop, fast_lr, granularity, tail, bl = agad
            cell = AGADCell(
                in_chop_prob=chop, fast_lr=fast_lr, auto_granularity=float(granularity), tail_weighting=tail,
                auto_scale=True, transfer_io=_transfer_read(), transfer_update=_one_pulse_transfer(),
            )
        return config.replace(update=config.update.replace(bl=bl), cell=cell)

    peer = {
        "2": f"{peer_name}2Preset", "4": f"{peer_name}4Preset", "tiki-taka": f"TikiTaka{peer_name}Preset",
        "ttv2": f"TTv2{peer_name}Preset", "c-ttv2": f"ChoppedTTv2{peer_name}Preset", "agad": f"AGAD{peer_name}Preset",
        "mp": f"MixedPrecision{peer_name}Preset",
    }[wrapper]
    preset.__name__ = f"{device_key}_{wrapper}_peer".replace("-", "_")
    preset.__doc__ = (
        f"aihwkit's ``{peer}``: the device of ``{device_key}-2016-io`` in the peer's periphery\n"
        "(``with_peer_periphery``) and its configuration wrapper [V: algorithms.md §3-§8; the numbers in\n"
        "``insitu.presets._PEER_WRAPPED``]. ``2``/``4``: that many devices per weight, one drawn at random\n"
        "written per update, the weight their sum. ``tiki-taka``: ``TikiTakaCell`` reading with PresetIO\n"
        "(noise and bound management off) and writing with PresetUpdate. ``ttv2``: ``ChoppedTikiTakaCell``\n"
        "without choppers, ``c-ttv2`` with, ``agad``: ``AGADCell``; their transfers one pulse at most (BL 1,\n"
        "no management), auto-scaled, with the device's fast_lr, auto_granularity and main BL. ``mp``:\n"
        "``MixedPrecisionCell`` with the class defaults. ReRAM-SB's transfer presets subtract the\n"
        "symmetry point, as the peer's SB variants.\n"
    )
    return preset


PEER_WRAPPERS = ("2", "4", "tiki-taka", "ttv2", "c-ttv2", "agad", "mp")
_WRAPPED_PRESETS = {
    f"{device_key}-{wrapper}-peer": _peer_wrapped(device_key, wrapper) for device_key in _PEER_WRAPPED for wrapper in PEER_WRAPPERS
}

PRESETS: dict[str, Callable[[], TileConfig]] = {
    "floating-point": floating_point,
    "gokmen-vlasov-2016": gokmen_vlasov_2016,
    "gokmen-2017-cnn-baseline": gokmen_vlasov_2016,
    "gokmen-2017-cnn-nm-bm": gokmen_2017_cnn_nm_bm,
    "gokmen-2017-cnn-nm-bm-um": gokmen_2017_cnn_nm_bm_um,
    "gokmen-2017-cnn-nm-bm-um-4d": gokmen_2017_cnn_nm_bm_um_4d,
    "gokmen-2017-cnn-nm-bm-um-13d": gokmen_2017_cnn_nm_bm_um_13d,
    "cristiano-2018-two-pair": cristiano_2018_two_pair,
    "cristiano-2018-same-device": cristiano_2018_same_device,
    "cristiano-2018-single-pair": cristiano_2018_single_pair,
    "cristiano-2018-peer-pcm-table": cristiano_2018_peer_pcm_table,
    "pow-step-2016-io": pow_step_2016_io,
    "reram-es-2016-io": reram_es_2016_io,
    "reram-sb-2016-io": reram_sb_2016_io,
    "ecram-2016-io": ecram_2016_io,
    "ecram-mo-2016-io": ecram_mo_2016_io,
    "capacitor-2016-io": capacitor_2016_io,
    "idealized-2016-io": idealized_2016_io,
    "pcm-pair-2016-io": pcm_pair_2016_io,
    "jump-table-pair-2016-io": jump_table_pair_2016_io,
    "reram-es-peer-io": reram_es_peer_io,
    "reram-sb-peer-io": reram_sb_peer_io,
    "ecram-peer-io": ecram_peer_io,
    "ecram-mo-peer-io": ecram_mo_peer_io,
    "capacitor-peer-io": capacitor_peer_io,
    "idealized-peer-io": idealized_peer_io,
    "pcm-2016-io": pcm_2016_io,
    "pcm-peer-io": pcm_peer_io,
    **_WRAPPED_PRESETS,
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> TileConfig:
    """A fresh config for preset ``name``; unknown names list the valid ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown preset '{name}'.{hint} Available presets: {', '.join(preset_names())}.") from None
