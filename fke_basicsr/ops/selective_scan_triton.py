"""Fused Triton selective scan, forward and backward (docs/scan_backends.md).

One program per (batch, group, block of ``BLOCK_D`` channels) walks the sequence in chunks of ``CHUNK`` steps.
Inside a chunk the recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(Δ_t A), b_t = Δ_t u_t B_t) is a parallel
associative scan over a (channels, state, time) tile, started from the state the previous chunk handed over, so
memory is bounded for any length. The forward saves only the state entering each chunk. The backward walks the
chunks from the last one, recomputes that chunk's states from the saved state, and runs the adjoint
λ_t = gy_t C_t + a_{t+1} λ_{t+1} as a reverse scan: no (b, d, L, N) tensor is ever stored. Everything is fp32.
Gradients of B and C (sums over a group's channels) go to one buffer per channel block, summed afterwards, so
the result is deterministic.

Triton is optional: :func:`available` says whether it imports. On CPU tensors the kernels run under Triton's
interpreter (``TRITON_INTERPRET=1``, set before triton is imported), which is how the tests check them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ['BLOCK_D', 'CHUNK', 'available', 'scan_triton_core']

BLOCK_D = 8   # channels per program
CHUNK = 32    # time steps per scan tile

try:  # optional dependency
    import triton
    import triton.language as tl
except Exception as _err:  # ImportError, or a broken install raising at import
    triton, _IMPORT_ERROR = None, f'triton not importable ({type(_err).__name__}: {_err})'
else:
    _IMPORT_ERROR = ''


def available() -> tuple[bool, str]:
    """(True, '') when triton imports, else (False, why)."""
    return triton is not None, _IMPORT_ERROR


if triton is not None:
    @triton.jit
    def _linear(a1, b1, a2, b2):
        """Compose h -> a1 h + b1, then h -> a2 h + b2."""
        return a1 * a2, b1 * a2 + b2

    @triton.jit
    def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr, last_ptr, ckpt_ptr,
                    L, n_chunks, d_total, G, gs, nblk, N,
                    BN: tl.constexpr, BD: tl.constexpr, T: tl.constexpr, SAVE: tl.constexpr):
        pid = tl.program_id(0)
        bi = pid // (G * nblk)
        g = (pid // nblk) % G
        blk = pid % nblk
        local = blk * BD + tl.arange(0, BD)
        mask_d = local < gs
        offs_d = g * gs + local
        offs_n = tl.arange(0, BN)
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)
        row = (bi * d_total + offs_d) * L
        bc_row = ((bi * G + g) * N + offs_n) * L
        state = ((bi * d_total + offs_d) * n_chunks)[:, None] * N + offs_n[None, :]
        jj = tl.arange(0, T)
        h = tl.zeros([BD, BN], dtype=tl.float32)
        for c in range(n_chunks):
            if SAVE:
                tl.store(ckpt_ptr + state + c * N, h, mask=mask_dn)
            offs_t = c * T + jj
            mask_t = offs_t < L
            m_dt = mask_d[:, None] & mask_t[None, :]
            m_nt = mask_n[:, None] & mask_t[None, :]
            u = tl.load(u_ptr + row[:, None] + offs_t[None, :], mask=m_dt, other=0.0)
            dt = tl.load(dt_ptr + row[:, None] + offs_t[None, :], mask=m_dt, other=0.0)
            Bt = tl.load(B_ptr + bc_row[:, None] + offs_t[None, :], mask=m_nt, other=0.0)
            Ct = tl.load(C_ptr + bc_row[:, None] + offs_t[None, :], mask=m_nt, other=0.0)
            a = tl.exp(dt[:, None, :] * A[:, :, None])  # (BD, BN, T); padding: Δ = 0, an identity step
            b = (dt * u)[:, None, :] * Bt[None, :, :]
            acum, hloc = tl.associative_scan((a, b), 2, _linear)
            hs = acum * h[:, :, None] + hloc
            y = tl.sum(hs * Ct[None, :, :], axis=1) + Dv[:, None] * u
            tl.store(y_ptr + row[:, None] + offs_t[None, :], y, mask=m_dt)
            h = tl.sum(tl.where((jj == T - 1)[None, None, :], hs, 0.0), axis=2)
        tl.store(last_ptr + (bi * d_total + offs_d)[:, None] * N + offs_n[None, :], h, mask=mask_dn)

    @triton.jit
    def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, ckpt_ptr, gy_ptr, glast_ptr,
                    du_ptr, ddt_ptr, dA_ptr, dD_ptr, dB_ptr, dC_ptr,
                    L, n_chunks, d_total, G, gs, nblk, N, batch,
                    BN: tl.constexpr, BD: tl.constexpr, T: tl.constexpr):
        pid = tl.program_id(0)
        bi = pid // (G * nblk)
        g = (pid // nblk) % G
        blk = pid % nblk
        local = blk * BD + tl.arange(0, BD)
        mask_d = local < gs
        offs_d = g * gs + local
        offs_n = tl.arange(0, BN)
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)
        row = (bi * d_total + offs_d) * L
        bc_row = ((bi * G + g) * N + offs_n) * L
        buf_row = (((blk * batch + bi) * G + g) * N + offs_n) * L  # this block's dB/dC buffer
        state = ((bi * d_total + offs_d) * n_chunks)[:, None] * N + offs_n[None, :]
        per_chan = (bi * d_total + offs_d)[:, None] * N + offs_n[None, :]
        jj = tl.arange(0, T)
        r = tl.load(glast_ptr + per_chan, mask=mask_dn, other=0.0)  # a_{t+1} λ_{t+1} entering from later chunks
        sA = tl.zeros([BD, BN], dtype=tl.float32)
        sD = tl.zeros([BD], dtype=tl.float32)
        for cc in range(n_chunks):
            c = n_chunks - 1 - cc
            h0 = tl.load(ckpt_ptr + state + c * N, mask=mask_dn, other=0.0)
            offs_t = c * T + jj
            mask_t = offs_t < L
            m_dt = mask_d[:, None] & mask_t[None, :]
            m_nt = mask_n[:, None] & mask_t[None, :]
            u = tl.load(u_ptr + row[:, None] + offs_t[None, :], mask=m_dt, other=0.0)
            dt = tl.load(dt_ptr + row[:, None] + offs_t[None, :], mask=m_dt, other=0.0)
            gy = tl.load(gy_ptr + row[:, None] + offs_t[None, :], mask=m_dt, other=0.0)
            Bt = tl.load(B_ptr + bc_row[:, None] + offs_t[None, :], mask=m_nt, other=0.0)
            Ct = tl.load(C_ptr + bc_row[:, None] + offs_t[None, :], mask=m_nt, other=0.0)
            # states h_t of this chunk, recomputed from the saved entering state
            a = tl.exp(dt[:, None, :] * A[:, :, None])
            acum, hloc = tl.associative_scan((a, (dt * u)[:, None, :] * Bt[None, :, :]), 2, _linear)
            hs = acum * h0[:, :, None] + hloc
            # h_{t-1}: the same scan over the steps shifted by one (an identity step first)
            m_p = (mask_d[:, None] & (jj > 0)[None, :]) & (offs_t - 1 < L)[None, :]
            u_p = tl.load(u_ptr + row[:, None] + offs_t[None, :] - 1, mask=m_p, other=0.0)
            dt_p = tl.load(dt_ptr + row[:, None] + offs_t[None, :] - 1, mask=m_p, other=0.0)
            B_p = tl.load(B_ptr + bc_row[:, None] + offs_t[None, :] - 1,
                          mask=(mask_n[:, None] & (jj > 0)[None, :]) & (offs_t - 1 < L)[None, :], other=0.0)
            acp, hlp = tl.associative_scan((tl.exp(dt_p[:, None, :] * A[:, :, None]),
                                            (dt_p * u_p)[:, None, :] * B_p[None, :, :]), 2, _linear)
            hprev = acp * h0[:, :, None] + hlp
            # adjoint λ_t = gy_t C_t + a_{t+1} λ_{t+1}; a_{t+1} from the next step inside the chunk, else 1 (r)
            m_q = (mask_d[:, None] & (jj < T - 1)[None, :]) & (offs_t + 1 < L)[None, :]
            dt_q = tl.load(dt_ptr + row[:, None] + offs_t[None, :] + 1, mask=m_q, other=0.0)
            alpha = tl.exp(dt_q[:, None, :] * A[:, :, None])
            acl, lloc = tl.associative_scan((alpha, gy[:, None, :] * Ct[None, :, :]), 2, _linear, reverse=True)
            lam = lloc + acl * r[:, :, None]
            q = lam * a * hprev  # ∂L/∂(Δ_t A)
            lB = tl.sum(lam * Bt[None, :, :], axis=1)  # Σ_n λ B: ∂L/∂(Δ_t u_t)
            tl.store(du_ptr + row[:, None] + offs_t[None, :], lB * dt + Dv[:, None] * gy, mask=m_dt)
            tl.store(ddt_ptr + row[:, None] + offs_t[None, :], tl.sum(q * A[:, :, None], axis=1) + lB * u,
                     mask=m_dt)
            tl.store(dB_ptr + buf_row[:, None] + offs_t[None, :], tl.sum(lam * (dt * u)[:, None, :], axis=0),
                     mask=m_nt)
            tl.store(dC_ptr + buf_row[:, None] + offs_t[None, :], tl.sum(hs * gy[:, None, :], axis=0), mask=m_nt)
            sA += tl.sum(q * dt[:, None, :], axis=2)
            sD += tl.sum(gy * u, axis=1)
            r = tl.sum(tl.where((jj == 0)[None, None, :], a * lam, 0.0), axis=2)
        tl.store(dA_ptr + per_chan, sA, mask=mask_dn)
        tl.store(dD_ptr + bi * d_total + offs_d, sD, mask=mask_d)


def _geometry(u: Tensor, Bg: Tensor) -> tuple[int, int, int, int]:
    """(groups, channels per group, channel blocks per group, chunks)."""
    G = Bg.shape[1]
    gs = u.shape[1] // G
    return G, gs, math.ceil(gs / BLOCK_D), math.ceil(u.shape[2] / CHUNK)


class _TritonScan(torch.autograd.Function):
    """(u, Δ, A, B, C, D) -> (y, h_L), y_t = <C_t, h_t> + D u_t; fp32 contiguous, B/C (b, G, N, L)."""

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, Bg: Tensor, Cg: Tensor, D: Tensor
                ) -> tuple[Tensor, Tensor]:
        b, d, L = u.shape
        n = A.shape[1]
        G, gs, nblk, n_chunks = _geometry(u, Bg)
        save = any(ctx.needs_input_grad)
        ckpt = u.new_empty((b, d, n_chunks, n) if save else (1,))
        y, last = torch.empty_like(u), u.new_empty(b, d, n)
        _fwd_kernel[(b * G * nblk,)](u, dt, A, Bg, Cg, D, y, last, ckpt, L, n_chunks, d, G, gs, nblk, n,
                                     BN=triton.next_power_of_2(n), BD=BLOCK_D, T=CHUNK, SAVE=save)
        ctx.save_for_backward(u, dt, A, Bg, Cg, D, ckpt)
        ctx.geometry = (G, gs, nblk, n_chunks, BLOCK_D, CHUNK)
        return y, last

    @staticmethod
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        u, dt, A, Bg, Cg, D, ckpt = ctx.saved_tensors
        G, gs, nblk, n_chunks, bd, chunk = ctx.geometry
        b, d, L = u.shape
        n = A.shape[1]
        gy = torch.zeros_like(u) if gy is None else gy.float().contiguous()
        glast = u.new_zeros(b, d, n) if glast is None else glast.float().contiguous()
        du, ddt = torch.empty_like(u), torch.empty_like(u)
        dA, dD = u.new_empty(b, d, n), u.new_empty(b, d)
        dB, dC = Bg.new_empty((nblk,) + Bg.shape), Cg.new_empty((nblk,) + Cg.shape)
        _bwd_kernel[(b * G * nblk,)](u, dt, A, Bg, Cg, D, ckpt, gy, glast, du, ddt, dA, dD, dB, dC,
                                     L, n_chunks, d, G, gs, nblk, n, b,
                                     BN=triton.next_power_of_2(n), BD=bd, T=chunk)
        return du, ddt, dA.sum(0), dB.sum(0), dC.sum(0), dD.sum(0)


def scan_triton_core(x: Tensor, dt: Tensor, A: Tensor, Bg: Tensor, Cg: Tensor, D: Tensor | None
                     ) -> tuple[Tensor, Tensor]:
    """Fused Triton scan of fp32 tensors: x, Δ (b, d, L), A (d, N), Bg/Cg (b, G, N, L), D (d,) or None.

    Returns (y, h_L) with y = <C, h> + D u; Δ is already softplus(delta + bias). Differentiable in all inputs.
    """
    D = x.new_zeros(x.shape[1]) if D is None else D.float()
    return _TritonScan.apply(x.contiguous(), dt.contiguous(), A.contiguous(), Bg.contiguous(), Cg.contiguous(),
                             D.contiguous())
