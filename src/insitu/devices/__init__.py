"""Device models: how one cross-point responds to update pulses.

=====================  ===========================================================
``IdealDevice``        exact floating-point update (the reference)
``ConstantStepDevice`` fixed step per coincidence, hard bounds (Gokmen & Vlasov 2016)
``LinearStepDevice``   step shrinking linearly towards the bound, hard bounds
``SoftBoundsDevice``   step proportional to the distance to the bound
``PowStepDevice``      step a power of the distance to the bound (Fusi & Abbott type)
``ExpStepDevice``      step saturating exponentially towards the bound ahead
``PiecewiseStepDevice`` step factor interpolated in a table over the weight range
``SoftBoundsReferenceDevice`` soft bounds read against a reference (symmetry-point offset)
``PowStepReferenceDevice``    power step read against a reference (symmetry-point offset)
``PCMDevice``          conductance device: SET-only, saturating, initial jump (for multi-conductance cells)
``JumpTableDevice``    conductance device: ΔG per pulse drawn from a per-bin table (measured data)
``PCMPairDevice``      tile device: w = (G⁺ − G⁻)/g_scale from two SET-only PCMDevice, optional refresh
``JumpTablePairDevice`` tile device: the same pair of JumpTableDevice
``OneSidedPairDevice`` tile device: w = g⁺ − g⁻ of two one-sided pulsed devices, up steps only, refresh (aihwkit's PCM preset)
=====================  ===========================================================

Looking at devices: :func:`plot_response` (``insitu device plot``) draws a family's pulse response
through its own model; :func:`fit_device` (``insitu device fit``) fits a family's mean device to a
measured pulse sequence (:mod:`.fit`).
"""

from .base import PARAM_NAMES, DeviceCapabilities, DeviceConfig, DeviceModel
from .ideal import IdealDevice
from .pulsed import ConstantStepDevice, LinearStepDevice, SoftBoundsDevice
from .powstep import PowStepDevice
from .expstep import ExpStepDevice
from .piecewise import PiecewiseStepDevice
from .reference import PowStepReferenceDevice, SoftBoundsReferenceDevice
from .pcm import ConductanceDevice, PCMDevice
from .jump_table import JumpTableDevice
from .conductance_pair import JumpTablePairDevice, PCMPairDevice
from .onesided import OneSidedPairDevice
from .response import plot_response
from .fit import fit_device

__all__ = [
    "DeviceCapabilities",
    "DeviceConfig",
    "DeviceModel",
    "PARAM_NAMES",
    "IdealDevice",
    "ConstantStepDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
    "PowStepDevice",
    "ExpStepDevice",
    "PiecewiseStepDevice",
    "SoftBoundsReferenceDevice",
    "PowStepReferenceDevice",
    "ConductanceDevice",
    "PCMDevice",
    "JumpTableDevice",
    "PCMPairDevice",
    "JumpTablePairDevice",
    "OneSidedPairDevice",
    "plot_response",
    "fit_device",
]
