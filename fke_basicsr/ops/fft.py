"""Real 2-D FFTs that always compute in fp32 (or fp64), whatever the input dtype and autocast state.

FFTs always run in fp32 (docs/architecture.md): CPU torch rejects half-precision FFTs and CUDA half FFTs
only accept power-of-two sizes, and the FKE's spectra (docs/architecture.md) are unnormalised
("backward") transforms whose DC terms easily overflow fp16. Both functions therefore disable autocast,
upcast bf16/fp16 to fp32 (fp64 stays fp64) and hand back complex64/complex128 spectra; ``irfft2`` casts its
real result to the dtype the caller asks for.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ['rfft2', 'irfft2', 'no_autocast']

_NORMS = ('backward', 'ortho', 'forward')


def no_autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``device``'s type (a no-op for types without autocast)."""
    device_type = torch.device(device).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _check_norm(norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")


def rfft2(x: Tensor, norm: str = 'backward') -> Tensor:
    """One-sided 2-D FFT over the last two dims, computed in fp32 (fp64 for fp64 input); FKE step 2."""
    if not isinstance(x, Tensor) or x.is_complex() or not x.is_floating_point():
        raise ValueError(f"x must be a real floating-point tensor, got "
                         f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dims (…, H, W), got shape {tuple(x.shape)}")
    _check_norm(norm)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    with no_autocast(x.device):
        return torch.fft.rfft2(x.to(compute), norm=norm)


def irfft2(X: Tensor, s: tuple[int, int] | None = None, norm: str = 'backward',
           dtype: torch.dtype | None = None) -> Tensor:
    """Inverse of :func:`rfft2`, computed in fp32/fp64; returns ``dtype`` (default: the spectrum's real dtype).

    Without ``s`` the output width is ``2·(W_f − 1)`` (torch's default, what DeepRFTv2's FKE relies on for
    even widths); pass ``s=(H, W)`` for odd sizes.
    """
    if not isinstance(X, Tensor) or not X.is_complex():
        raise ValueError(f"X must be a complex tensor (a one-sided spectrum), got "
                         f"{X.dtype if isinstance(X, Tensor) else type(X).__name__}")
    if X.dim() < 2:
        raise ValueError(f"X must have at least 2 dims (…, H, W_f), got shape {tuple(X.shape)}")
    if s is not None and (len(s) != 2 or any(int(v) < 1 for v in s)):
        raise ValueError(f"s must be None or a pair of positive ints (H, W), got {s!r}")
    if dtype is not None and not (dtype.is_floating_point and not dtype.is_complex):
        raise ValueError(f"dtype must be a real floating dtype or None, got {dtype}")
    _check_norm(norm)
    compute = torch.complex128 if X.dtype == torch.complex128 else torch.complex64
    with no_autocast(X.device):
        y = torch.fft.irfft2(X.to(compute), s=None if s is None else (int(s[0]), int(s[1])), norm=norm)
    return y if dtype is None else y.to(dtype)
