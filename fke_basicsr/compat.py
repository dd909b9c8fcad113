"""The smallest shims BasicSR 1.4.2 needs on today's torch/torchvision/numpy (docs/install.md).

Applied by ``import fke_basicsr`` before anything imports basicsr; each shim is a no-op where not needed and
none of them edits installed files.
"""
from __future__ import annotations

import importlib
import sys
import warnings

# Keeps the torch.library definitions alive: they are dropped when the Library object is garbage-collected.
_TORCHVISION_OP_LIBRARY = None
_APPLIED = False


def _import_torchvision():
    """Import torchvision; beside a CPU-only torch, declare the op schemas its meta registrations expect."""
    global _TORCHVISION_OP_LIBRARY
    try:
        return importlib.import_module('torchvision')
    except RuntimeError as err:  # "operator torchvision::nms does not exist": PyPI (CUDA) torchvision + CPU torch
        if 'torchvision::' not in str(err):
            raise
    for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
        del sys.modules[name]  # drop the half-initialised package before retrying
    import torch
    _TORCHVISION_OP_LIBRARY = torch.library.Library('torchvision', 'DEF')
    _TORCHVISION_OP_LIBRARY.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _TORCHVISION_OP_LIBRARY.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    return importlib.import_module('torchvision')


def _alias_functional_tensor() -> None:
    """basicsr 1.4.2 imports torchvision.transforms.functional_tensor, removed in torchvision 0.17."""
    try:
        importlib.import_module('torchvision.transforms.functional_tensor')
    except ImportError:
        from torchvision.transforms import _functional_tensor
        sys.modules['torchvision.transforms.functional_tensor'] = _functional_tensor


def apply() -> None:
    """Apply every shim once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    # basicsr's niqe.py imports scipy.ndimage.filters (deprecated); harmless, but fatal under -W error.
    warnings.filterwarnings('ignore', message='Please import `convolve`', category=DeprecationWarning)
    warnings.filterwarnings('ignore', message='Please use `convolve`', category=DeprecationWarning)
    _import_torchvision()
    _alias_functional_tensor()
    _APPLIED = True


def torchvision_ops_available() -> bool:
    """True when torchvision's C++ ops loaded (False beside a CPU torch, where the shim declared stubs)."""
    return _TORCHVISION_OP_LIBRARY is None
