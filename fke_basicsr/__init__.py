"""fke-basicsr: DeepRFTv2's Fourier Kernel Estimator, DeepRFTv2-S/-B and ATD-light+FKE as a BasicSR plug-in.

Importing the package applies the compatibility shims, then registers every arch, loss, model, dataset and
metric of the package in BasicSR's registries, so YAML ``type:`` names resolve.
"""
from fke_basicsr import compat as _compat

_compat.apply()

try:
    import basicsr as _basicsr  # noqa: F401  (after the shims: basicsr imports torchvision at module level)
    if getattr(_basicsr, '__file__', None) is None:  # the repository's launcher folder seen as a namespace package
        raise ImportError('basicsr resolves to a folder without __init__.py (BasicSR is not installed)')
except ImportError as _err:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        'fke_basicsr needs BasicSR 1.4.2, which is not installed: pip install basicsr==1.4.2 (without build '
        'isolation: pip install -U setuptools wheel && pip install --no-build-isolation basicsr==1.4.2), or run '
        'scripts/setup_venv.sh from the repository root.') from _err

from fke_basicsr import archs, data, losses, metrics, models  # noqa: E402,F401  (registration side effects)

__version__ = '0.1.0'
