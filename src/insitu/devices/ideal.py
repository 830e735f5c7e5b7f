"""The floating-point reference device."""

from __future__ import annotations

import dataclasses

from ..config import register_config
from .base import DeviceCapabilities, DeviceConfig

__all__ = ["IdealDevice"]


@register_config
@dataclasses.dataclass
class IdealDevice(DeviceConfig):
    """Exact, unbounded floating-point weights: the tile applies ``W -= lr · δ xᵀ`` exactly.

    Use it with ideal IO to recover a plain PyTorch layer, or with non-ideal IO to study the
    analog forward and backward passes alone.
    """

    is_ideal = True
    capabilities = DeviceCapabilities(lockstep=True)
