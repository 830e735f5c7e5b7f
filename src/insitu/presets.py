"""Named configurations of the papers, one function each, all returning a :class:`TileConfig`.

``get_preset("gokmen-vlasov-2016")`` returns a fresh, validated config; ``PRESETS`` lists them.
Each docstring says where every number comes from (``shared/reference/papers.md`` tags: [V] read
in a source, [R] recalled from the paper).
"""

from __future__ import annotations

import difflib
from typing import Callable

from .config import ConfigError
from .devices import ConstantStepDevice, IdealDevice, PowStepDevice
from .io import IOConfig
from .tile import TileConfig
from .update import PulseUpdateConfig

__all__ = ["PRESETS", "get_preset", "preset_names"]


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
    """
    from .multi_conductance import MultiConductanceConfig

    return MultiConductanceConfig(
        lsp=_cristiano_pcm(nonlinearity=0.2, initial_jump=0.02, g_max=0.5, dg=0.005),
        msp=_cristiano_pcm(nonlinearity=2.0, initial_jump=0.1, g_max=1.0, dg=0.02),
        gain_factor=3.0,
        transfer_every=1000,
        polarity_inversion=True,
        clt_tolerance=0.02,
        clt_max_iterations=100,
        update=PulseUpdateConfig(pulse_type="stochastic", bl=10, update_management=True),
    )


def cristiano_2018_same_device() -> TileConfig:
    """Two pairs of the *same* strongly saturating PCM device (the MSP device of ``-two-pair``) as LSP and MSP."""
    base = cristiano_2018_two_pair()
    return base.replace(lsp=base.msp.replace(g_max=0.5, dg=0.005))


def cristiano_2018_single_pair() -> TileConfig:
    """Single-pair PCM baseline W = g⁺ − g⁻ of the saturating device, refreshed when a device saturates.

    The device of ``cristiano-2018-same-device`` with the range of the MSP (``g_max`` 1, so weights
    reach ±1) and the LSP's step (``dg`` 0.005); a pair is RESET and reprogrammed by closed-loop
    tuning when one of its devices exceeds 90% of its ``G_max`` (checked every 100 examples).
    """
    base = cristiano_2018_same_device()
    return base.replace(msp=None, lsp=base.msp.replace(g_max=1.0, dg=0.005))


def pow_step_2016_io() -> TileConfig:
    """A power-law step device (aihwkit's ``PowStepDevice`` defaults [V: algorithms.md §1.2]:
    γ = 1 with 10 % device-to-device spread, ``dw_min`` 0.001 at the far bound, bounds ±0.6 with
    30 % spread, 30 % cycle-to-cycle spread) in the 2016 periphery (BL 10, σ 0.06, α 12). Its
    nominal step is the step at mid-range, ``0.001 · 0.5^γ`` = 0.0005, so ``Cx = Cd = 1.41`` at lr
    0.01. About 1,200 states over the weight range (2 · 0.6 / 0.0005 · 0.5, [D])."""
    base = gokmen_vlasov_2016()
    return base.replace(device=PowStepDevice(dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down_dtod=0.01))


PRESETS: dict[str, Callable[[], TileConfig]] = {
    "floating-point": floating_point,
    "gokmen-vlasov-2016": gokmen_vlasov_2016,
    "gokmen-2017-cnn-baseline": gokmen_vlasov_2016,
    "gokmen-2017-cnn-nm-bm": gokmen_2017_cnn_nm_bm,
    "gokmen-2017-cnn-nm-bm-um": gokmen_2017_cnn_nm_bm_um,
    "gokmen-2017-cnn-nm-bm-um-4d": gokmen_2017_cnn_nm_bm_um_4d,
    "cristiano-2018-two-pair": cristiano_2018_two_pair,
    "cristiano-2018-same-device": cristiano_2018_same_device,
    "cristiano-2018-single-pair": cristiano_2018_single_pair,
    "pow-step-2016-io": pow_step_2016_io,
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
