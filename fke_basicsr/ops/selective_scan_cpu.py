"""Fused CPU selective scan: one numba kernel per pass, parallel over (batch, channel) (docs/scan_backends.md).

The forward walks time once per channel with its N-sized state in registers, fusing the decays exp(Δ A)
(a vectorisable float32 exp), the state update, the read-out <C_t, h_t> and D u. It keeps only the states at chunk starts (every
``CHUNK`` steps). The backward recomputes one chunk of states at a time from those checkpoints into a
per-thread buffer and runs the reverse-time adjoint scan through it, so memory stays O(b·d·L/CHUNK·N) and no
(b, d, L, N) tensor exists. The gradients of B and C, sums over the channels of a group, go to one buffer per
worker so no two threads write the same element. State and accumulation are in the compute dtype (fp32 for
fp32/bf16/fp16 inputs); the per-channel sums of ∂A and ∂D in fp64. fp64 inputs go to the ``torch`` backend.

numba is optional: :func:`available` says whether it imports; callers fall back to the ``torch`` backend.
Kernels compile on first use and are cached on disk (``cache=True``).
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
from torch import Tensor

__all__ = ['CHUNK', 'available', 'scan_cpu_core']

CHUNK = 64  # steps between saved states; the backward's per-thread buffer is CHUNK x N


# numba's pool is sized once, at import. A pool larger than the threads later asked for (numba.set_num_threads)
# made training steps differ in the last bits between otherwise identical processes (an exact resume broke), so
# the pool is sized to torch's thread count unless the user set NUMBA_NUM_THREADS.
os.environ.setdefault('NUMBA_NUM_THREADS', str(max(1, torch.get_num_threads())))

try:  # optional dependency: without it ``available()`` is False and nothing below is compiled
    import numba
    from numba import prange
except Exception as _err:  # ImportError, or a numba/numpy version clash raising at import
    numba, _IMPORT_ERROR = None, f'numba not importable ({type(_err).__name__}: {_err})'
else:
    _IMPORT_ERROR = ''


def available() -> tuple[bool, str]:
    """(True, '') when numba imports, else (False, why)."""
    return numba is not None, _IMPORT_ERROR


if numba is not None:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    _jit = functools.partial(numba.njit, parallel=True, cache=True, error_model='numpy', fastmath={'contract'})

    @intrinsic
    def _bits_to_f32(typingctx, bits):
        """Reinterpret an int32 as a float32 (lets the exp below build 2**n without a library call)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.int32), codegen

    @numba.njit(inline='always', cache=True)
    def _exp(x):
        """exp of a float32 in plain arithmetic, so loops over the state vectorise; ≈1 ulp, 0 below -87.

        Cody-Waite reduction x = n ln2 + r, |r| ≤ ln2/2, then a degree-6 Taylor polynomial of exp(r).
        """
        under = x < np.float32(-87.0)
        x = min(max(x, np.float32(-87.0)), np.float32(88.0))
        n = np.float32(math.floor(x * np.float32(1.44269504) + np.float32(0.5)))
        r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        e = p * _bits_to_f32((np.int32(n) + np.int32(127)) << np.int32(23))
        return np.float32(0.0) if under else e

    @numba.njit(inline='always', cache=True)
    def _decays(dt, a_c, t0, m, ab):
        """ab[j, k] = exp(Δ_{t0+j} A_k) for j < m, a chunk's decays in one vectorisable loop nest."""
        n = a_c.shape[0]
        for j in range(m):
            s = dt[t0 + j]
            for k in range(n):
                ab[j, k] = _exp(s * a_c[k])

    @_jit
    def _forward(u, dt, A, Bt, Ct, D, group, T, y, last, ckpt, save):
        b, d, L = u.shape
        n = A.shape[1]
        for task in prange(b * d):
            bi, c = task // d, task % d
            g = c // group
            h = np.zeros(n, dtype=np.float32)
            ab = np.empty((T, n), dtype=np.float32)
            a_c = A[c]
            dtc, uc, yc = dt[bi, c], u[bi, c], y[bi, c]
            Bg, Cg = Bt[bi, g], Ct[bi, g]
            for t0 in range(0, L, T):
                m = min(T, L - t0)
                if save:
                    ckpt[bi, c, t0 // T, :] = h
                _decays(dtc, a_c, t0, m, ab)
                for j in range(m):
                    t = t0 + j
                    x = uc[t]
                    dx = dtc[t] * x
                    acc = np.float32(0.0)
                    for k in range(n):
                        hk = ab[j, k] * h[k] + dx * Bg[t, k]
                        h[k] = hk
                        acc += hk * Cg[t, k]
                    yc[t] = acc + D[c] * x
            last[bi, c, :] = h

    @_jit
    def _backward(u, dt, A, Bt, Ct, D, group, T, ckpt, gy, glast, parts, du, ddt, dA, dD, dB, dC):
        b, d, L = u.shape
        n = A.shape[1]
        G = Bt.shape[1]
        K = ckpt.shape[2]
        per = (group + parts - 1) // parts
        for task in prange(b * G * parts):
            bi, rest = task // (G * parts), task % (G * parts)
            g, p = rest // parts, rest % parts
            hb = np.empty((T + 1, n), dtype=np.float32)  # hb[j + 1] = h_{t0 + j}, hb[0] = the chunk's start
            ab = np.empty((T, n), dtype=np.float32)
            lam = np.empty(n, dtype=np.float32)
            q = np.empty(n, dtype=np.float32)
            r = np.empty(n, dtype=np.float32)
            sA = np.empty(n, dtype=np.float64)
            for c in range(g * group + p * per, min(g * group + (p + 1) * per, (g + 1) * group)):
                a_c = A[c]
                r[:] = glast[bi, c]
                sA[:] = 0.0
                s_D = 0.0
                for kc in range(K - 1, -1, -1):
                    t0 = kc * T
                    t1 = min(L, t0 + T)
                    hb[0, :] = ckpt[bi, c, kc]
                    _decays(dt[bi, c], a_c, t0, t1 - t0, ab)
                    for t in range(t0, t1):  # recompute this chunk's states
                        j = t - t0
                        dx = dt[bi, c, t] * u[bi, c, t]
                        for k in range(n):
                            hb[j + 1, k] = ab[j, k] * hb[j, k] + dx * Bt[bi, g, t, k]
                    for t in range(t1 - 1, t0 - 1, -1):  # adjoint λ_t = gy_t C_t + a_{t+1} λ_{t+1}
                        j = t - t0
                        st = dt[bi, c, t]
                        x = u[bi, c, t]
                        gyt = gy[bi, c, t]
                        Bs, Cs = Bt[bi, g, t], Ct[bi, g, t]
                        dBs, dCs = dB[p, bi, g, t], dC[p, bi, g, t]
                        dx = st * x
                        for k in range(n):
                            lk = gyt * Cs[k] + r[k]
                            lam[k] = lk
                            q[k] = lk * ab[j, k] * hb[j, k]  # ∂L/∂(Δ_t A_k)
                            dCs[k] += gyt * hb[j + 1, k]
                            dBs[k] += lk * dx
                            r[k] = ab[j, k] * lk
                        g_dt = np.float32(0.0)
                        g_w = np.float32(0.0)
                        for k in range(n):
                            g_dt += q[k] * a_c[k]
                            g_w += lam[k] * Bs[k]
                            sA[k] += q[k] * st
                        du[bi, c, t] = g_w * st + D[c] * gyt
                        ddt[bi, c, t] = g_dt + g_w * x
                        s_D += gyt * x
                dA[bi, c, :] = sA
                dD[bi, c] = s_D


def _threads() -> int:
    """numba workers to use: torch's thread count, capped by numba's pool."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


class _FusedScan(torch.autograd.Function):
    """(u, Δ, A, Bt, Ct, D) -> (y, h_L), y_t = <C_t, h_t> + D u_t; fp32, Bt/Ct (b, G, L, N), all contiguous."""

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor
                ) -> tuple[Tensor, Tensor]:
        b, d, L = u.shape
        n = A.shape[1]
        grad = any(ctx.needs_input_grad)
        ckpt = u.new_empty((b, d, math.ceil(L / CHUNK), n) if grad else (1, 1, 1, n))
        y, last = torch.empty_like(u), u.new_empty(b, d, n)
        _threads()
        _forward(u.numpy(), dt.numpy(), A.numpy(), Bt.numpy(), Ct.numpy(), D.numpy(), d // Bt.shape[1], CHUNK,
                 y.numpy(), last.numpy(), ckpt.numpy(), grad)
        ctx.save_for_backward(u, dt, A, Bt, Ct, D, ckpt)
        ctx.chunk = CHUNK
        return y, last

    @staticmethod
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        u, dt, A, Bt, Ct, D, ckpt = ctx.saved_tensors
        b, d, L = u.shape
        group = d // Bt.shape[1]
        parts = max(1, min(_threads(), group))  # workers per group; each owns one ∂B/∂C buffer
        gy = torch.zeros_like(u) if gy is None else gy.float().contiguous()
        glast = u.new_zeros(b, d, A.shape[1]) if glast is None else glast.float().contiguous()
        du, ddt = torch.empty_like(u), torch.empty_like(u)
        dA, dD = torch.empty(b, d, A.shape[1], dtype=torch.float64), torch.empty(b, d, dtype=torch.float64)
        dB, dC = Bt.new_zeros((parts,) + Bt.shape), Ct.new_zeros((parts,) + Ct.shape)
        _backward(u.numpy(), dt.numpy(), A.numpy(), Bt.numpy(), Ct.numpy(), D.numpy(), group, ctx.chunk,
                  ckpt.numpy(), gy.numpy(), glast.numpy(), parts, du.numpy(), ddt.numpy(), dA.numpy(),
                  dD.numpy(), dB.numpy(), dC.numpy())
        return du, ddt, dA.sum(0).float(), dB.sum(0), dC.sum(0), dD.sum(0).float()


def scan_cpu_core(x: Tensor, dt: Tensor, A: Tensor, Bg: Tensor, Cg: Tensor, D: Tensor | None
                  ) -> tuple[Tensor, Tensor]:
    """Fused scan of fp32 CPU tensors: x, Δ (b, d, L), A (d, N), Bg/Cg (b, G, N, L), D (d,) or None.

    Returns (y, h_L) with y = <C, h> + D u; Δ is already softplus(delta + bias). Differentiable in all inputs.
    """
    D = x.new_zeros(x.shape[1]) if D is None else D.float()
    Bt = Bg.transpose(-1, -2).contiguous()  # (b, G, L, N): a step's N values side by side
    Ct = Cg.transpose(-1, -2).contiguous()
    return _FusedScan.apply(x.contiguous(), dt.contiguous(), A.contiguous(), Bt, Ct, D.contiguous())
