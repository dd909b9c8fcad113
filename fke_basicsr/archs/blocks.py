"""Building blocks of DeepRFTv2 (paper §3.3.3; docs/architecture.md, Blocks) and of the block-type ablation.

Attribute names follow the authors' layout (``conv1`` … ``conv5``, ``sca.1``, ``norm1``, ``attn.A_logs`` …) so the
state-dict keys of every block equal the official ones (docs/architecture.md): no renaming below block level.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fke_basicsr.ops.fft import no_autocast
from fke_basicsr.ops.geometry import WindowGrid, to_pair

__all__ = [
    'LayerNorm2d', 'SimpleGate', 'LocalAvgPool2d', 'NAFBlock', 'LocalNAFBlock', 'EVSS2D', 'EVSS', 'NAFEVSBlock',
    'LocalNAFEVSBlock', 'ResBlock', 'VSBlock', 'BLOCK_KINDS', 'build_block', 'set_scan_backend',
]


# --------------------------------------------------------------------------------------------------------------
# Normalisation, gate, pooling
# --------------------------------------------------------------------------------------------------------------

class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels, biased variance, affine (NAFNet)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # F.layer_norm over the channel-last view is the same math and runs in fp32 under autocast
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """First channel half times second half (NAFNet)."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class LocalAvgPool2d(nn.Module):
    """TLC local average pooling: box mean over a sliding window, 'valid', replicate-padded back (TLC).

    Falls back to the global mean when the window covers the whole map in both directions; otherwise each
    axis uses min(window, size). Computed with an integral image (O(HW) for any window) in fp32 or wider.
    """

    def __init__(self, window: int | Sequence[int]):
        super().__init__()
        self.window = to_pair(window, 'window')

    def extra_repr(self) -> str:
        return f'window={self.window}'

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        kh, kw = self.window
        if kh >= h and kw >= w:
            return x.mean(dim=(-2, -1), keepdim=True)
        kh, kw = min(kh, h), min(kw, w)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        s = F.pad(xf.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        box = (s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]) / (kh * kw)
        oh, ow = box.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(box, pad, mode='replicate').to(x.dtype)


def _local_window(train_size: int | Sequence[int]) -> tuple[int, int]:
    """TLC window ⌊1.5·train_size⌋ per axis (NAFNet's test-time local converter, docs/architecture.md)."""
    th, tw = to_pair(train_size, 'train_size')
    return int(th * 1.5), int(tw * 1.5)


# --------------------------------------------------------------------------------------------------------------
# NAF blocks
# --------------------------------------------------------------------------------------------------------------

class NAFBlock(nn.Module):
    """NAFNet block, DW/FFN expansion 2, global-pool SCA; 7c²+33c parameters (docs/architecture.md, Blocks)."""

    def __init__(self, c: int, train_size: int | Sequence[int] | None = None):
        super().__init__()
        dw = 2 * c
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(c, c, 1)
        # sca[0] is the pooling (no parameters), sca[1] the 1×1 conv: key ``sca.1``
        pool = nn.AdaptiveAvgPool2d(1) if train_size is None else LocalAvgPool2d(_local_window(train_size))
        self.sca = nn.Sequential(pool, nn.Conv2d(c, c, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def ffn(self, y: Tensor) -> Tensor:
        """Second half: y + γ·conv5(SG(conv4(LN2(y))))."""
        return y + self.gamma * self.conv5(self.sg(self.conv4(self.norm2(y))))

    def forward(self, x: Tensor) -> Tensor:
        g = self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = x + self.beta * self.conv3(g * self.sca(g))
        return self.ffn(y)


class LocalNAFBlock(NAFBlock):
    """NAFBlock whose SCA pools over a ⌊1.5·train_size⌋ window (TLC), same parameters."""

    def __init__(self, c: int, train_size: int | Sequence[int]):
        if train_size is None:
            raise ValueError("train_size must be given for LocalNAFBlock (the TLC window is 1.5·train_size)")
        super().__init__(c, train_size=train_size)


# --------------------------------------------------------------------------------------------------------------
# Selective-scan mixer
# --------------------------------------------------------------------------------------------------------------

class EVSS2D(nn.Module):
    """EVSSM's SS2D with one raster scan, dt/B/C depthwise Conv1d and Mamba init (docs/architecture.md, Blocks).

    ``window`` (REDS' ``LocalNAFEVSBlock_patch``): when the map exceeds it, the scan runs inside
    non-overlapping windows (border windows snapped to the edge, :class:`WindowGrid`).
    ``scan_backend`` is handed to :func:`fke_basicsr.ops.selective_scan.selective_scan` (None = its default).
    """

    def __init__(self, c: int, d_state: int = 8, expand: int = 2, d_conv: int = 3,
                 window: int | Sequence[int] | None = None, scan_backend: str | None = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"c must be a positive int, got {c!r}")
        self.d_model, self.d_state = c, d_state
        self.d_inner = d = int(expand * c)
        self.dt_rank = r = math.ceil(c / 16)
        self.window = None if window is None else to_pair(window, 'window')
        self.scan_backend = scan_backend
        n_proj = r + 2 * d_state

        self.in_proj = nn.Linear(c, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, d_conv, padding=(d_conv - 1) // 2, groups=d, bias=True)
        self.act = nn.GELU()
        # x_proj: the weight of a default Linear(d → R+2N, no bias), stored with the leading K=1 axis
        x_proj = torch.empty(n_proj, d)
        nn.init.kaiming_uniform_(x_proj, a=math.sqrt(5))
        self.x_proj_weight = nn.Parameter(x_proj.unsqueeze(0))
        self.x_conv = nn.Conv1d(n_proj, n_proj, 7, padding=3, groups=n_proj, bias=True)
        # dt projection: U(±R^-½) weight; bias = softplus⁻¹(dt), dt log-uniform in [dt_min, dt_max]
        dt_w = torch.empty(d, r).uniform_(-r ** -0.5, r ** -0.5)
        dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_weight = nn.Parameter(dt_w.unsqueeze(0))
        self.dt_projs_bias = nn.Parameter((dt + torch.log(-torch.expm1(-dt))).unsqueeze(0))
        # S4D-real A = −(1..N) per channel, D = 1; kept in fp32 and (by Mamba convention) out of weight decay
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d, 1))
        self.Ds = nn.Parameter(torch.ones(d))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.dt_projs_bias._no_reinit = True
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, c, bias=False)

    def extra_repr(self) -> str:
        return (f'd_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, '
                f'window={self.window}, scan_backend={self.scan_backend}')

    def scan(self, u: Tensor) -> Tensor:
        """Selective scan of a (B, d, h, w) map in row-major order → (B, d, h, w) fp32."""
        from fke_basicsr.ops.selective_scan import selective_scan  # late: keeps blocks importable on its own

        b, d, h, w = u.shape
        seq = u.reshape(b, d, h * w)
        p = torch.einsum('bdl,cd->bcl', seq, self.x_proj_weight[0])
        p = self.x_conv(p)
        dt, bm, cm = torch.split(p, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = torch.einsum('brl,dr->bdl', dt, self.dt_projs_weight[0])
        # the scan runs in fp32 with autocast off (mamba's kernel computes in fp32 as well)
        with no_autocast(u.device):
            y = selective_scan(seq.float(), dt.float(), -torch.exp(self.A_logs.float()),
                               bm.float().unsqueeze(1), cm.float().unsqueeze(1), self.Ds.float(), z=None,
                               delta_bias=self.dt_projs_bias.float().view(-1), delta_softplus=True,
                               backend=self.scan_backend)
        return y.view(b, d, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.d_model:
            raise ValueError(f"x must be (B, {self.d_model}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        u, z = self.in_proj(x.permute(0, 2, 3, 1)).chunk(2, dim=-1)
        u = self.act(self.conv2d(u.permute(0, 3, 1, 2).contiguous()))
        if self.window is not None and (h > self.window[0] or w > self.window[1]):
            grid = WindowGrid(h, w, self.window)
            y = grid.merge(self.scan(grid.split(u)))
        else:
            y = self.scan(u)
        # out_norm in its parameters' dtype (fp32 under autocast, as the authors'; bf16 for a bf16 model)
        y = self.out_norm(y.permute(0, 2, 3, 1).to(self.out_norm.weight.dtype)) * F.gelu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)


class EVSS(nn.Module):
    """FKE residual module: x + EVSS2D(LayerNorm2d(x)), no FFN."""

    def __init__(self, c: int, d_state: int = 8, window: int | Sequence[int] | None = None,
                 scan_backend: str | None = None):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.attn = EVSS2D(c, d_state=d_state, window=window, scan_backend=scan_backend)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm1(x))


class NAFEVSBlock(NAFBlock):
    """NAF block with an EVSS2D branch on the gated features; transposes (even idx) / flips (odd idx) its input
    without undoing it (docs/architecture.md, Blocks)."""

    def __init__(self, c: int, idx: int, train_size: int | Sequence[int] | None = None,
                 window: int | Sequence[int] | None = None, local: bool = False, scan_backend: str | None = None):
        if local and train_size is None:
            raise ValueError("train_size must be given when local=True (the TLC window is 1.5·train_size)")
        if not isinstance(idx, int) or idx < 0:
            raise ValueError(f"idx must be a non-negative int (block index in its level), got {idx!r}")
        super().__init__(c, train_size=train_size if local else None)
        self.idx = idx
        self.norm_mamba = LayerNorm2d(c)
        self.attn = EVSS2D(c, window=window, scan_backend=scan_backend)
        self.lamb_l = nn.Parameter(torch.ones(1, c, 1, 1))
        self.lamb_g = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1))

    def extra_repr(self) -> str:
        return f'idx={self.idx} ({"transpose" if self.idx % 2 == 0 else "flip H and W"} at the input)'

    def orient(self, x: Tensor) -> Tensor:
        """The block's input re-orientation: H↔W transpose for even idx, flip of both axes for odd idx."""
        return x.transpose(-2, -1) if self.idx % 2 == 0 else x.flip(-2, -1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.orient(x)
        g = self.sg(self.conv2(self.conv1(self.norm1(x))))
        local = self.conv3(g * self.sca(g))
        glob = self.attn(self.norm_mamba(g)) * (self.alpha + 1)
        y = x + self.beta * (self.lamb_l * local + self.lamb_g * glob)
        return self.ffn(y)


class LocalNAFEVSBlock(NAFEVSBlock):
    """NAFEVSBlock with TLC local SCA and a windowed EVSS2D (REDS' ``LocalNAFEVSBlock_patch``)."""

    def __init__(self, c: int, idx: int, train_size: int | Sequence[int], window: int | Sequence[int] | None = None,
                 scan_backend: str | None = None):
        super().__init__(c, idx, train_size=train_size, window=window, local=True, scan_backend=scan_backend)


# --------------------------------------------------------------------------------------------------------------
# Ablation blocks
# --------------------------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """x + conv3×3(ReLU(conv3×3(x))), both convs with bias (the ablation's ResBlock rows, paper Table 6)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class VSBlock(nn.Module):
    """Vision-state-space block for the ablation (paper Table 6): EVSS token mixer, then NAFNet's gated FFN.

    y = x + EVSS2D(LN1(x)); out = y + γ·conv5(SG(conv4(LN2(y)))), γ initialised to 0 as in NAFNet.
    """

    def __init__(self, c: int, window: int | Sequence[int] | None = None, scan_backend: str | None = None):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.attn = EVSS2D(c, window=window, scan_backend=scan_backend)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.sg = SimpleGate()
        self.conv5 = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.attn(self.norm1(x))
        return y + self.gamma * self.conv5(self.sg(self.conv4(self.norm2(y))))


BLOCK_KINDS = ('naf', 'NAFEVSBlock', 'localnaf', 'LocalNAFEVSBlock_patch', 'EVSS', 'ResBlock', 'VSBlock')


def build_block(kind: str, c: int, idx: int, train_size: int | Sequence[int] | None = None,
                window: int | Sequence[int] | None = None) -> nn.Module:
    """The authors' ``get_modules`` factory plus the ablation's 'ResBlock' / 'VSBlock'.

    ``idx`` is the block's index inside its level (orientation of NAFEVS blocks); ``train_size`` is the TLC size
    at that level ('localnaf', 'LocalNAFEVSBlock_patch'); ``window`` the EVSS2D scan window ('…_patch',
    'VSBlock'; the other kinds ignore it, as the authors' factory does).
    """
    if kind == 'naf':
        return NAFBlock(c)
    if kind == 'NAFEVSBlock':
        return NAFEVSBlock(c, idx)
    if kind == 'localnaf':
        if train_size is None:
            raise ValueError("train_size must be given for kind 'localnaf'")
        return LocalNAFBlock(c, train_size)
    if kind == 'LocalNAFEVSBlock_patch':
        if train_size is None:
            raise ValueError("train_size must be given for kind 'LocalNAFEVSBlock_patch'")
        return LocalNAFEVSBlock(c, idx, train_size, window)
    if kind == 'EVSS':
        return EVSS(c)  # the authors build it without a scan window whatever the level's patch size
    if kind == 'ResBlock':
        return ResBlock(c)
    if kind == 'VSBlock':
        return VSBlock(c, window=window)
    raise ValueError(f"kind must be one of {list(BLOCK_KINDS)}, got {kind!r}")


def set_scan_backend(module: nn.Module, backend: str | None) -> nn.Module:
    """Set the selective-scan backend of every EVSS2D inside ``module`` (None = the scan's default); returns it."""
    for m in module.modules():
        if isinstance(m, EVSS2D):
            m.scan_backend = backend
    return module
