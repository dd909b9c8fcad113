"""Registers DeepRFTv2Ablation (paper Tables 6/7 variants) on `import fke_basicsr`: archs/__init__ imports *_arch.py
files only; the classes live in fke_basicsr/archs/ablation_variants.py."""
from fke_basicsr.archs.ablation_variants import DeepRFTv2Ablation  # noqa: F401  (registration)
