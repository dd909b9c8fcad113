"""fke_basicsr.ops.geometry: the one window-start rule, WindowGrid (maps and ATD tokens), the authors' tile starts
and ramps, exact partition of unity, padding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fke_basicsr.ops.geometry import (TileGrid, WindowGrid, blend_weights, crop_to, pad_symmetric_to, pad_to_multiple,
                                      tile_starts, tiled_apply, to_pair, window_option, window_starts)

torch.set_num_threads(2)


def authors_weights(size, tile, overlap):
    """numpy re-reading of the authors' ramps (no normalisation): o-ramps between regular tiles, e-ramps at the end."""
    k = min(tile, size)
    stride = k - overlap
    starts, s = [], 0
    while s + k < size:
        starts.append(s)
        s += stride
    starts.append(size - k)
    n = len(starts)
    e = n * stride + 2 * overlap - size
    ws = []
    for i in range(n):
        w = np.ones(k)
        if 0 < i < n - 1:
            w[:overlap] = np.linspace(0, 1, overlap)
        if i < n - 2:
            w[k - overlap:] = np.linspace(1, 0, overlap)
        if n >= 2 and i == n - 2:
            w[k - e:] = np.linspace(1, 0, e)
        if n >= 2 and i == n - 1:
            w[:e] = np.linspace(0, 1, e)
        ws.append(w)
    return starts, ws


def coverage_sum(size, starts, ws):
    total = np.zeros(size)
    for s, w in zip(starts, ws):
        total[s:s + len(w)] += np.asarray(w)
    return total


def test_tile_starts_examples():
    assert tile_starts(100, 64, 16) == [0, 36]
    assert tile_starts(128, 64, 16) == [0, 48, 64]
    assert tile_starts(112, 64, 16) == [0, 48]            # lands exactly on the border: no extra tile
    assert tile_starts(720, 512, 128) == [0, 208]
    assert tile_starts(1280, 512, 128) == [0, 384, 768]
    for size in (1, 10, 16, 64):                          # side <= tile: one tile
        assert tile_starts(size, 64, 16) == [0]
    assert tile_starts(10, 4, 0) == [0, 4, 6]


@pytest.mark.parametrize('size', [1, 5, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 79, 80, 81, 96, 100, 113,
                                  127, 128, 129, 200, 257])
@pytest.mark.parametrize('tile,overlap', [(32, 16), (32, 8), (32, 0), (24, 23), (64, 16), (5, 4), (2, 1)])
def test_blend_weights_partition_of_unity(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    ws = blend_weights(size, tile, overlap)
    k = min(tile, size)
    assert len(ws) == len(starts) and all(w.shape == (k,) and w.dtype == torch.float64 for w in ws)
    assert all(bool((w >= 0).all()) for w in ws)
    assert starts[0] == 0 and starts[-1] == size - k
    assert all(b - a == k - overlap for a, b in zip(starts[:-2], starts[1:-1]))
    np.testing.assert_allclose(coverage_sum(size, starts, ws), 1.0, rtol=0, atol=1e-12)


def test_matches_authors_where_theirs_is_exact():
    """Regular 2- and 3-tile cases with side > overlap: identical weights. Elsewhere theirs is not a partition."""
    checked, inexact = 0, 0
    for tile, overlap in [(64, 16), (512, 128), (32, 8), (40, 10)]:
        for size in range(overlap + 1, 4 * tile):
            starts, theirs = authors_weights(size, tile, overlap)
            if len(starts) not in (2, 3):
                continue
            if np.abs(coverage_sum(size, starts, theirs) - 1).max() > 1e-12:
                inexact += 1
                continue
            ours = blend_weights(size, tile, overlap)
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-12)
            checked += 1
    assert checked > 300 and inexact > 0
    # a three-tile overlap (tiles 0 and 2 meet): theirs deviates, ours still sums to one
    starts, theirs = authors_weights(113, 64, 16)
    assert np.abs(coverage_sum(113, starts, theirs) - 1).max() > 1e-3
    np.testing.assert_allclose(coverage_sum(113, starts, blend_weights(113, 64, 16)), 1.0, atol=1e-12)


SIZES = [(1, 1), (7, 100), (16, 16), (15, 17), (32, 32), (33, 31), (47, 64), (50, 77), (100, 129), (16, 48)]


@pytest.mark.parametrize('hw', SIZES)
@pytest.mark.parametrize('tile,overlap', [(32, 16), ((24, 40), (8, 12)), (16, 0)])
def test_tiled_apply_identity_and_pointwise(hw, tile, overlap):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    for fn, ref in [(lambda t: t, x), (lambda t: torch.sigmoid(2 * t) - 0.3, torch.sigmoid(2 * x) - 0.3)]:
        for tile_batch in (1, 3):
            y = tiled_apply(fn, x, tile, overlap, tile_batch=tile_batch)
            assert y.shape == ref.shape and y.dtype == ref.dtype
            assert (y - ref).abs().max() <= 1e-6


def test_tiled_apply_channels_dtype_and_tile_batch():
    x = torch.rand(3, 2, 70, 45, dtype=torch.float64)
    seen = []

    def fn(t):
        seen.append(t.shape[0])
        return torch.cat([t, t.square()], 1).to(torch.bfloat16)

    y = tiled_apply(fn, x, (32, 24), (8, 6), tile_batch=2, device='cpu')
    assert y.dtype == torch.bfloat16 and y.shape == (3, 4, 70, 45)
    assert max(seen) <= 2 * 3 and sum(seen) == 3 * len(TileGrid((70, 45), (32, 24), (8, 6)))
    ref = torch.cat([x, x.square()], 1)
    assert (y.double() - ref).abs().max() <= 2 * 2 ** -8   # only the bf16 rounding of fn's output


@pytest.mark.parametrize('hw', [(64, 96), (100, 38), (16, 16)])
def test_tiled_apply_scales(hw):
    """SR-like x2 output (nearest up-sampling) and a half-resolution output (2x2 mean) blend exactly."""
    torch.manual_seed(1)
    x = torch.randn(1, 2, *hw)
    up = tiled_apply(lambda t: F.interpolate(t, scale_factor=2, mode='nearest'), x, 32, 16, scale=2)
    assert torch.allclose(up, F.interpolate(x, scale_factor=2, mode='nearest'), atol=1e-6, rtol=0)
    down = tiled_apply(lambda t: F.avg_pool2d(t, 2), x, 32, 16, scale=0.5)
    assert torch.allclose(down, F.avg_pool2d(x, 2), atol=1e-6, rtol=0)


def test_tilegrid_split_merge():
    torch.manual_seed(2)
    grid = TileGrid((100, 70), 32, 16)
    assert len(grid) == len(tile_starts(100, 32, 16)) * len(tile_starts(70, 32, 16))
    x = torch.randn(2, 3, 100, 70)
    tiles = grid.split(x)
    assert tiles.shape == (len(grid) * 2, 3, 32, 32)
    r, c, h, w = grid.boxes()[5]
    assert torch.equal(tiles[5 * 2 + 1], x[1, :, r:r + h, c:c + w])   # tile-major order
    assert (grid.merge(tiles) - x).abs().max() <= 1e-6
    # the same grid on a x2 map and on a half-resolution map
    x2 = torch.randn(2, 3, 200, 140)
    assert grid.split(x2, scale=2).shape == (len(grid) * 2, 3, 64, 64)
    assert (grid.merge(grid.split(x2, 2), 2) - x2).abs().max() <= 1e-6
    with pytest.raises(ValueError, match='scale'):
        TileGrid((100, 70), 32, 15).split(torch.randn(1, 4, 50, 35), 0.5)   # odd starts (stride 17) cannot be halved
    grid2 = TileGrid((100, 64), 32, 16)
    xh = torch.randn(1, 4, 50, 32)
    th = grid2.split(xh, 0.5)
    assert th.shape[-2:] == (16, 16)
    assert torch.equal(th, grid2.split(F.interpolate(xh, scale_factor=2), 1)[:, :, ::2, ::2])
    assert (grid2.merge(th, 0.5) - xh).abs().max() <= 1e-6
    weight_sum = torch.zeros(100, 64)
    for k, (r, c, h, w) in enumerate(grid2.boxes()):
        weight_sum[r:r + h, c:c + w] += grid2.weight(k)
    assert (weight_sum - 1).abs().max() <= 1e-6


@pytest.mark.parametrize('mode', ['constant', 'reflect', 'replicate'])
@pytest.mark.parametrize('hw', [(8, 8), (5, 13), (2, 3), (30, 17)])
def test_pad_crop_round_trip(mode, hw):
    torch.manual_seed(3)
    x = torch.randn(2, 3, *hw)
    y, size = pad_to_multiple(x, (8, 4), mode)
    assert size == hw and y.shape[-2] % 8 == 0 and y.shape[-1] % 4 == 0
    assert y.shape[-2] - hw[0] < 8 and y.shape[-1] - hw[1] < 4
    assert torch.equal(crop_to(y, size), x)
    ph, pw = y.shape[-2] - hw[0], y.shape[-1] - hw[1]
    if mode == 'constant':
        assert y[..., hw[0]:, :].abs().sum() == 0 and y[..., hw[1]:].abs().sum() == 0
    elif ph < hw[0] and pw < hw[1]:                       # a single reflect/replicate step: same as F.pad
        assert torch.equal(y, F.pad(x, (0, pw, 0, ph), mode=mode))
    if mode == 'reflect' and ph:                          # mirror about the last row, without repeating it
        assert torch.equal(y[..., hw[0], :hw[1]], x[..., hw[0] - 2, :])
    if mode == 'replicate':
        assert torch.equal(y[..., -1, :hw[1]], x[..., -1, :])
    # unbatched and extra leading dims keep their layout
    z, _ = pad_to_multiple(x[0], 8, mode)
    assert torch.equal(z, pad_to_multiple(x, 8, mode)[0][0])


def test_pad_noop_and_errors():
    x = torch.randn(1, 1, 16, 24)
    y, size = pad_to_multiple(x, 8)
    assert y is x and size == (16, 24)
    with pytest.raises(ValueError, match='mode'):
        pad_to_multiple(x, 7, 'circular')
    with pytest.raises(ValueError, match='multiple'):
        pad_to_multiple(x, 0)
    with pytest.raises(ValueError, match='reflect'):
        pad_to_multiple(torch.randn(1, 1, 1, 5), 4, 'reflect')
    with pytest.raises(ValueError, match='size'):
        crop_to(x, (17, 24))


def test_validation_errors():
    with pytest.raises(ValueError, match='overlap'):
        tile_starts(100, 32, 32)
    with pytest.raises(ValueError, match='overlap'):
        tile_starts(100, 32, -1)
    with pytest.raises(ValueError, match='tile'):
        tile_starts(100, 0, 0)
    with pytest.raises(ValueError, match='size'):
        tile_starts(0, 32, 8)
    with pytest.raises(ValueError, match='overlap'):
        TileGrid((64, 64), (32, 16), (8, 16))
    with pytest.raises(ValueError, match='tile'):
        TileGrid((64, 64), (32, 16, 8), 8)
    x = torch.randn(1, 3, 40, 40)
    with pytest.raises(ValueError, match='x'):
        TileGrid((64, 64), 32, 8).split(x)
    with pytest.raises(ValueError, match='tiles'):
        TileGrid((64, 64), 32, 8).merge(torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match='fn'):
        tiled_apply(lambda t: t[..., :-1], x, 16, 4)
    with pytest.raises(ValueError, match='scale'):
        tiled_apply(lambda t: t, x, 16, 4, scale=0)
    with pytest.raises(ValueError, match='tile_batch'):
        tiled_apply(lambda t: t, x, 16, 4, tile_batch=0)
    with pytest.raises(ValueError, match='x'):
        tiled_apply(lambda t: t, x[0], 16, 4)


# ---------------------------------------------------------------------------------------------- windows
def test_window_grid_partition():
    x = torch.arange(2 * 10 * 7, dtype=torch.float32).view(2, 1, 10, 7)
    grid = WindowGrid(10, 7, 4)
    wins = grid.split(x)
    assert grid.rows == [0, 4, 6] and grid.cols == [0, 3]
    assert wins.shape == (2 * 3 * 2, 1, 4, 4)
    torch.testing.assert_close(grid.merge(wins), x)
    # each pixel comes from its owner: full windows, and the snapped window only for the remainder
    tag = torch.cat([torch.full((2, 1, 4, 4), float(k)) for k in range(6)])
    owner = grid.merge(tag)[0, 0]
    assert owner[0:4, 0:4].eq(0).all() and owner[0:4, 4:7].eq(1).all()
    assert owner[4:8, 0:4].eq(2).all() and owner[8:10, 0:4].eq(4).all() and owner[8:10, 4:].eq(5).all()
    g = WindowGrid(5, 5, 8)  # window larger than the map: clamped, one window
    assert g.window == (5, 5) and g.num_windows == 1


@pytest.mark.parametrize('size,win', [(8, 4), (10, 4), (4, 4), (3, 4), (13, 5), (1, 1)])
def test_one_start_rule_for_windows_and_tiles(size, win):
    """Non-overlapping windows are the overlap-0 tiles: a regular grid plus one window flush with the far edge."""
    k = min(win, size)
    ref = list(range(0, size - k + 1, k)) + ([size - k] if size % k else [])
    assert window_starts(size, win) == ref == tile_starts(size, win, 0)


@pytest.mark.parametrize('h,w', [(8, 12), (10, 13), (4, 7)])
def test_window_tokens_against_loops(h, w):
    """ATD's (B, H, W, C) token layout: windows in raster order, each pixel read back from its owner."""
    ws = 4
    x = torch.randn(2, h, w, 3)
    grid = WindowGrid(h, w, ws)
    win = grid.tokens(x)
    rows = list(range(0, h - ws + 1, ws)) + ([h - ws] if h % ws else [])
    cols = list(range(0, w - ws + 1, ws)) + ([w - ws] if w % ws else [])
    ref = torch.stack([x[:, r:r + ws, c:c + ws].reshape(2, ws * ws, 3) for r in rows for c in cols], 1)
    assert torch.equal(win, ref)
    assert torch.equal(grid.untokens(win), x)
    # the token and the map layouts agree
    maps = grid.split(x.permute(0, 3, 1, 2))  # (nW*B, C, ws, ws)
    torch.testing.assert_close(grid.untokens(win).permute(0, 3, 1, 2), grid.merge(maps))


def test_symmetric_pad_matches_numpy():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 3), (0, 1)), mode='symmetric')
    assert torch.equal(pad_to_multiple(x, 8, 'symmetric')[0], torch.from_numpy(ref))
    assert pad_symmetric_to(torch.rand(1, 1, 3, 2), 16, 16).shape[-2:] == (16, 16)  # shorter than its padding


def test_pair_and_window_options():
    assert to_pair(3, 'a') == (3, 3) and to_pair([2, 5], 'a') == (2, 5) and to_pair(0, 'a', minimum=0) == (0, 0)
    for bad in (0, True, [1, 2, 3], 'x', [1.0, 2]):
        with pytest.raises(ValueError, match='a:'):
            to_pair(bad, 'a')
    assert window_option(None, 'w') == (None, (0, 0))
    assert window_option(320, 'w') == ((320, 320), (0, 0))
    assert window_option({'size': [32, 64], 'overlap': 8}, 'w') == ((32, 64), (8, 8))
    with pytest.raises(ValueError, match='w: overlap'):
        window_option({'size': 8, 'overlap': 8}, 'w')
    with pytest.raises(ValueError, match='size'):
        window_option({'window': 8}, 'w')
