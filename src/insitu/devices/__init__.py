"""Device models: how one cross-point responds to update pulses.

=====================  ===========================================================
``IdealDevice``        exact floating-point update (the reference)
``ConstantStepDevice`` fixed step per coincidence, hard bounds (Gokmen & Vlasov 2016)
``LinearStepDevice``   step shrinking linearly towards the bound, hard bounds
``SoftBoundsDevice``   step proportional to the distance to the bound
=====================  ===========================================================
"""

from .base import PARAM_NAMES, DeviceConfig, DeviceModel
from .ideal import IdealDevice
from .pulsed import ConstantStepDevice, LinearStepDevice, SoftBoundsDevice

__all__ = [
    "DeviceConfig",
    "DeviceModel",
    "PARAM_NAMES",
    "IdealDevice",
    "ConstantStepDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
]
