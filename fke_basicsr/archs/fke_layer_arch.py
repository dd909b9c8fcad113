"""Registers :class:`FourierKernelEstimator` in BasicSR's ARCH_REGISTRY (``type: FourierKernelEstimator``)."""
from basicsr.utils.registry import ARCH_REGISTRY

from fke_basicsr.archs.fke import FourierKernelEstimator
from fke_basicsr.registry import register

register(ARCH_REGISTRY)(FourierKernelEstimator)

__all__ = ['FourierKernelEstimator']
