"""Network architectures (nn.Modules); registered ones live in *_arch.py."""
from pathlib import Path

from fke_basicsr.registry import import_modules

_modules = import_modules(__name__, Path(__file__).parent, '_arch')
