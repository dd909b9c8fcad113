"""ATD-light (Adaptive Token Dictionary, Zhang et al. CVPR 2024) with DeepRFTv2's optional FKE chain (paper Table 5).

Attribute names follow the official ATD layout so original ATD-light checkpoints load strictly; official ATD+FKE
checkpoints (``ker_ests.*`` in the authors' FKE layout) load through :func:`fke_basicsr.checkpoints.load_checkpoint`
(layout ``'ATD'``) or plain ``load_state_dict`` (a pre-hook renames the FKE keys onto our FourierKernelEstimator).

The network runs any input size: windows that do not fit are taken from the image edges (snapped border
windows), and an image below one window is mirror-padded up to it. How an image is run at test time lives in
:class:`fke_basicsr.protocol.TestTimeProtocol` (docs/evaluation.md):
  * original ATD: mirror-pad the image to a multiple of the window (``val: size_multiple: 16, pad_mode: symmetric``);
  * DeepRFTv2's copy, whole image: no padding (``val: size_multiple: 1``);
  * DeepRFTv2's copy, tiled: conv_first on the whole image, then 64×64 feature tiles overlapping by 16 through
    body and upsampler, blended at HR (``val: tile: {size: 64, overlap: 16}``) — see :meth:`ATD.tile_inputs`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from fke_basicsr.archs.fke import FourierKernelEstimator
from fke_basicsr.registry import register
from fke_basicsr.ops.geometry import WindowGrid, pad_symmetric_to, window_option

RGB_MEAN = (0.4488, 0.4371, 0.4040)
DEFAULT_FKE_WINDOW = {'size': 64, 'overlap': 16}   # the FKE's own eval tiling of maps above 64 (whole images)


# ----------------------------------------------------------------------------------------------------------------
# Window geometry (windows from fke_basicsr.ops.geometry.WindowGrid; edge windows snapped to the border)
# ----------------------------------------------------------------------------------------------------------------
def relative_position_index(ws: int) -> torch.Tensor:
    """ws²×ws² row index into the (2ws−1)² bias table: (y1−y2+ws−1)·(2ws−1) + (x1−x2+ws−1)."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device=None) -> torch.Tensor:
    """nW×ws²×ws² additive mask (0 / −100) separating the regions that the cyclic shift glued together."""
    labels = torch.zeros(1, h, w, 1, device=device)
    region = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            labels[:, hs, wsl, :] = region
            region += 1
    lab = WindowGrid(h, w, ws).tokens(labels)[0, :, :, 0]  # nW×ws²
    diff = lab[:, :, None] != lab[:, None, :]
    return torch.zeros(diff.shape, device=device).masked_fill(diff, -100.0)


def _embed(x: torch.Tensor) -> torch.Tensor:
    """B×C×H×W → B×N×C (raster token order)."""
    return x.flatten(2).transpose(1, 2)


def _unembed(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×N×C → B×C×H×W."""
    b, _, c = t.shape
    return t.transpose(1, 2).reshape(b, c, size[0], size[1])


@dataclass
class _Geometry:
    """Per-forward constants shared by all layers: feature size, window grid, shift mask, relative-position index."""
    size: tuple[int, int]
    grid: WindowGrid
    mask: torch.Tensor
    rpi: torch.Tensor


# ----------------------------------------------------------------------------------------------------------------
# Layer parts
# ----------------------------------------------------------------------------------------------------------------
class DWConv(nn.Module):
    """Depth-wise k×k conv + GELU on the token map (key ``dwconv.depthwise_conv.0``)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim), nn.GELU())

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _embed(self.depthwise_conv(_unembed(t, size)))


class ConvFFN(nn.Module):
    """fc1 → GELU → (+ GELU(DWConv)) → fc2."""

    def __init__(self, dim: int, hidden: int, kernel_size: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = DWConv(hidden, kernel_size)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h = self.act(self.fc1(t))
        return self.fc2(h + self.dwconv(h, size))


class WindowAttention(nn.Module):
    """(Shifted-)window MSA with a learned relative-position bias; takes the shared qkv."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, qkv: torch.Tensor, geo: _Geometry, shift: int) -> torch.Tensor:
        b, n, c3 = qkv.shape
        (h, w), ws, nh = geo.size, self.window_size, self.num_heads
        qkv = qkv.reshape(b, h, w, c3)
        if shift:
            qkv = torch.roll(qkv, (-shift, -shift), dims=(1, 2))
        win = geo.grid.tokens(qkv)  # B×nW×ws²×3C
        nw = win.shape[1]
        q, k, v = win.reshape(b, nw, ws * ws, 3, nh, -1).permute(3, 0, 1, 4, 2, 5)  # each B×nW×heads×ws²×d
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[geo.rpi.reshape(-1)].reshape(ws * ws, ws * ws, nh)
        attn = attn + bias.permute(2, 0, 1)
        if shift:
            attn = attn + geo.mask[:, None]  # nW×1×N×N broadcast over batch and heads
        out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, nw, ws * ws, c3 // 3)
        out = geo.grid.untokens(self.proj(out))
        if shift:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        return out.reshape(b, n, c3 // 3)


class TokenDictionaryAttention(nn.Module):
    """TDCA: single-head cosine cross-attention of tokens onto the dictionary (``attn_atd``)."""

    def __init__(self, dim: int, reducted_dim: int, num_tokens: int):
        super().__init__()
        self.wq = nn.Linear(dim, reducted_dim)
        self.wk = nn.Linear(dim, reducted_dim)
        self.wv = nn.Linear(dim, dim)
        self.scale = nn.Parameter(torch.full((num_tokens,), 0.5))
        self.log_m = math.log(num_tokens)

    def forward(self, u: torch.Tensor, td: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = F.normalize(self.wq(u), dim=-1)
        k = F.normalize(self.wk(td), dim=-1)
        sim = q @ k.transpose(-2, -1)
        sim = (sim * (1 + torch.clamp(self.scale, 0, 1) * self.log_m)).softmax(-1)  # B×N×m
        return sim @ self.wv(td), sim


class CategoryAttention(nn.Module):
    """AC-MSA: MSA inside groups of tokens sorted by their dictionary category (``attn_aca``)."""

    def __init__(self, dim: int, num_heads: int, category_size: int):
        super().__init__()
        self.num_heads, self.category_size = num_heads, category_size
        self.logit_scale = nn.Parameter(torch.full((1, 1), math.log(10.0)))
        self.proj = nn.Linear(dim, dim)

    def forward(self, qkv: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
        b, n, c3 = qkv.shape
        # Same call as the authors (unstable sort of the argmax category): ties come out in the order
        # torch's sort leaves them on this device, so grouping matches theirs.
        _, order = torch.sort(sim.argmax(-1), dim=-1, stable=False)
        shuffled = torch.gather(qkv, 1, order[..., None].expand(-1, -1, c3))
        gs = min(n, self.category_size)
        ng = math.ceil(n / gs)
        pad = ng * gs - n
        if pad:  # the last group is filled with the last sorted tokens, reversed
            shuffled = torch.cat([shuffled, torch.flip(shuffled[:, n - pad:], [1])], 1)
        q, k, v = shuffled.reshape(b, ng, gs, 3, self.num_heads, -1).permute(3, 0, 1, 4, 2, 5)
        scale = torch.exp(torch.clamp(self.logit_scale, max=math.log(100.0)))
        attn = (q @ k.transpose(-2, -1)) * scale
        out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, ng * gs, c3 // 3)[:, :n]
        out = torch.empty_like(out).scatter_(1, order[..., None].expand(-1, -1, c3 // 3), out)
        return self.proj(out)


class ATDTransformerLayer(nn.Module):
    """One ATD layer: SW-MSA + TDCA + AC-MSA on a shared qkv, ConvFFN, dictionary refinement."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, category_size: int,
                 num_tokens: int, reducted_dim: int, convffn_kernel_size: int, mlp_ratio: float,
                 qkv_bias: bool, is_last: bool):
        super().__init__()
        self.shift, self.is_last = shift, is_last
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        if not is_last:  # the last layer's dictionary would be discarded, so it has no refinement
            self.norm3 = nn.InstanceNorm1d(num_tokens, affine=True)
            self.sigma = nn.Parameter(torch.zeros(num_tokens, 1))
        self.wqkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_win = WindowAttention(dim, window_size, num_heads)
        self.attn_atd = TokenDictionaryAttention(dim, reducted_dim, num_tokens)
        self.attn_aca = CategoryAttention(dim, num_heads, category_size)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), convffn_kernel_size)

    def forward(self, x: torch.Tensor, td: torch.Tensor, geo: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.norm1(x)
        qkv = self.wqkv(u)
        x_atd, sim = self.attn_atd(u, td)
        x_aca = self.attn_aca(qkv, sim)
        x_win = self.attn_win(qkv, geo, self.shift)
        x = x + x_win + x_atd + x_aca
        x = x + self.convffn(self.norm2(x), geo.size)
        if not self.is_last:
            weights = self.norm3(sim.transpose(1, 2)).softmax(-1)  # B×m×N
            gate = torch.sigmoid(self.sigma)
            td = gate * td + (1 - gate) * (weights @ x)
        return x, td


class ATDBasicBlock(nn.Module):
    """The transformer layers of one ATDB with its learned token dictionary ``td``."""

    def __init__(self, dim: int, depth: int, num_tokens: int, window_size: int, use_checkpoint: bool,
                 **layer_kw):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.td = nn.Parameter(torch.randn(num_tokens, dim))
        self.layers = nn.ModuleList(
            ATDTransformerLayer(dim, window_size=window_size, shift=0 if j % 2 == 0 else window_size // 2,
                                num_tokens=num_tokens, is_last=j == depth - 1, **layer_kw)
            for j in range(depth))

    def forward(self, x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
        td = self.td.expand(x.shape[0], -1, -1)  # every ATDB restarts from its own dictionary
        for layer in self.layers:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x, td = torch_checkpoint.checkpoint(layer, x, td, geo, use_reentrant=False)
            else:
                x, td = layer(x, td, geo)
        return x


class ATDB(nn.Module):
    """Residual module: transformer layers, 3×3 conv, residual add."""

    def __init__(self, dim: int, **block_kw):
        super().__init__()
        self.residual_group = ATDBasicBlock(dim, **block_kw)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, t: torch.Tensor, geo: _Geometry) -> torch.Tensor:
        return _embed(self.conv(_unembed(self.residual_group(t, geo), geo.size))) + t


class PatchEmbed(nn.Module):
    """Flatten to tokens + LayerNorm (model-level ``patch_embed``; shared by every FKE re-embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_embed(x))


def _init_weights(m: nn.Module) -> None:
    """ATD's init hook: Linear trunc-normal(0.02)/zero bias, LayerNorm (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------
@register(ARCH_REGISTRY)
class ATD(nn.Module):
    """ATD (light defaults) for ×s super-resolution, optionally with one FKE after each ATDB (paper §4.1 E).

    Args follow the official constructor (``embed_dim``, ``depths``, ``num_heads``, ``window_size``,
    ``category_size``, ``num_tokens``, ``reducted_dim``, ``convffn_kernel_size``, ``mlp_ratio``, ``img_range``,
    ``upsampler``, ``resi_connection``); ``img_size``/``patch_norm`` are accepted for YAML compatibility. The
    official ``patch_size`` (patch embedding, always 1 in ATD-light) and ``ape`` (always False) are fixed; the
    options check says to remove them. Our additions: ``fke`` (insert the FKE chain) and ``fke_window``
    (default ``{size: 64, overlap: 16}``: the FKE's own eval tiling when it sees maps above 64, i.e. on whole
    images). Test-time padding and tiling: module docstring.
    """

    size_multiple = 1  # any input size works (RestorationModel and the options checks read this)

    def __init__(self, upscale: int = 2, in_chans: int = 3, img_size: int = 64,
                 embed_dim: int = 48, depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (4, 4, 4, 4),
                 window_size: int = 16, category_size: int = 128, num_tokens: int = 64, reducted_dim: int = 8,
                 convffn_kernel_size: int = 7, mlp_ratio: float = 1.0, qkv_bias: bool = True,
                 patch_norm: bool = True, img_range: float = 1.0, upsampler: str = 'pixelshuffledirect',
                 resi_connection: str = '1conv', use_checkpoint: bool = False, fke: bool = False,
                 fke_window: int | dict | bool | None = None):
        super().__init__()
        if upsampler != 'pixelshuffledirect':
            raise ValueError(f"upsampler: only 'pixelshuffledirect' (ATD-light) is implemented, got {upsampler!r}")
        if resi_connection != '1conv':
            raise ValueError(f"resi_connection: only '1conv' (ATD-light) is implemented, got {resi_connection!r}")
        if not patch_norm:
            raise ValueError(f'patch_norm: ATD-light uses patch_norm=True, got {patch_norm}')
        if len(depths) != len(num_heads):
            raise ValueError(f'depths and num_heads: expected equal lengths, got {list(depths)} / {list(num_heads)}')
        if any(embed_dim % h for h in num_heads):
            raise ValueError(f'embed_dim: expected a multiple of every num_heads entry, got {embed_dim}')
        self.upscale, self.window_size, self.img_range = upscale, window_size, img_range
        self.mean = torch.tensor(RGB_MEAN if in_chans == 3 else (0.0,) * in_chans).view(1, in_chans, 1, 1)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.register_buffer('relative_position_index_SA', relative_position_index(window_size))
        self.layers = nn.ModuleList(
            ATDB(embed_dim, depth=d, num_heads=h, window_size=window_size, category_size=category_size,
                 num_tokens=num_tokens, reducted_dim=reducted_dim, convffn_kernel_size=convffn_kernel_size,
                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, use_checkpoint=use_checkpoint)
            for d, h in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, in_chans * upscale ** 2, 3, 1, 1), nn.PixelShuffle(upscale))
        self.ker_ests = None
        # None: the default windows; False: none (the FKE sees whole maps)
        window, window_overlap = window_option(
            None if fke_window is False else DEFAULT_FKE_WINDOW if fke_window is None else fke_window, 'fke_window')
        if fke:
            self.ker_ests = nn.ModuleList(
                FourierKernelEstimator(in_channels=embed_dim, width=embed_dim, levels=4, first_column=i == 0,
                                       block='EVSS', image_head=False, pad_to_even=True, window=window,
                                       window_overlap=window_overlap if window else 0)
                for i in range(len(depths)))
            self.register_load_state_dict_pre_hook(_rename_official_fke_hook)
        self.apply(_init_weights)  # covers the FKE modules too, as the authors' hook does

    # -- pieces -------------------------------------------------------------------------------------------------
    def _geometry(self, h: int, w: int, device) -> _Geometry:
        ws = self.window_size
        if h < ws or w < ws:
            raise ValueError(f'ATD: feature size {h}x{w} is smaller than the window size {ws}')
        return _Geometry((h, w), WindowGrid(h, w, ws), shifted_window_mask(h, w, ws, ws // 2, device),
                         self.relative_position_index_SA)

    def forward_body(self, feat: torch.Tensor) -> torch.Tensor:
        """Shallow features B×C×H×W → deep features (ATDBs, FKE chain, final norm), before conv_after_body."""
        size = feat.shape[-2:]
        geo = self._geometry(size[0], size[1], feat.device)
        t = self.patch_embed(feat)
        state = None
        for i, layer in enumerate(self.layers):
            t = layer(t, geo)
            if self.ker_ests is not None:  # FKE replaces the feature; the shared LayerNorm re-embeds it
                out = self.ker_ests[i](_unembed(t, size), state)
                state = out.state
                t = self.patch_embed(out.feature)
        return _unembed(self.norm(t), size)

    def _reconstruct(self, feat: torch.Tensor) -> torch.Tensor:
        """conv_first features → HR residual image (body, long skip, pixel-shuffle-direct upsampler)."""
        return self.upsample(self.conv_after_body(self.forward_body(feat)) + feat)

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LR images B×C×H×W → SR images B×C×sH×sW; any size (an image below one window is mirror-padded to it)."""
        return self.from_tiles(self.forward_tiles(self.tile_inputs(x)))[..., :x.shape[-2] * self.upscale,
                                                                         :x.shape[-1] * self.upscale]

    # -- test-time tiling hooks (fke_basicsr.protocol.TestTimeProtocol) ----------------------------------------
    tile_input_scales = (1,)

    def tile_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The whole-image stage of a tiled run: normalise, then conv_first (tiles are cut from its features)."""
        if x.dim() != 4:
            raise ValueError(f'x: expected a B×C×H×W tensor, got shape {tuple(x.shape)}')
        x = pad_symmetric_to(x, self.window_size, self.window_size)
        return [self.conv_first((x - self.mean.to(x)) * self.img_range)]

    def forward_tiles(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """conv_first feature tiles → HR residual tiles (body, long skip, upsampler)."""
        return self._reconstruct(inputs[0])

    def from_tiles(self, y: torch.Tensor) -> torch.Tensor:
        """The blended HR output of :meth:`forward_tiles` → the SR image (undo the normalisation)."""
        return y / self.img_range + self.mean.to(y)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint loading: the layout lives in fke_basicsr.checkpoints (registered as 'ATD'); this pre-hook lets plain
# load_state_dict (BasicSR's load_network) take official ATD+FKE keys too.
# ----------------------------------------------------------------------------------------------------------------
def _rename_official_fke_hook(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: rename official FKE keys in place, so official ATD+FKE weights load strictly."""
    from fke_basicsr.checkpoints import official_mapping

    mapping = official_mapping('ATD')
    for key in [k for k in state_dict if k.startswith(prefix + 'ker_ests.')]:
        new = prefix + mapping.from_official(key[len(prefix):])
        if new != key and new not in state_dict:
            state_dict[new] = state_dict.pop(key)
