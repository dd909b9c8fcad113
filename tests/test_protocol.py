"""fke_basicsr.protocol.TestTimeProtocol: the evaluation protocols (pad to a multiple, whole image, the authors'
pyramid tiles for DeepRFTv2, conv_first-feature tiles for ATD) against hand-rolled loops over the tiles and
against values recorded from the networks' former built-in test modes; options under network_g that moved."""
from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F

import fke_basicsr  # noqa: F401  (shims + registration)
from fke_basicsr.archs.atd_arch import ATD
from fke_basicsr.archs.deeprftv2_arch import DeepRFTv2
from fke_basicsr.archs.outputs import prediction
from fke_basicsr.ops.geometry import TileGrid
from fke_basicsr.ops.pyramid import gaussian_pyramid
from fke_basicsr.protocol import TestTimeProtocol, check_network_options

SMALL = dict(variant='S', width=16, enc_blocks=[1, 1, 2], dec_blocks=[2, 1, 1], fke_width=16)
TINY_D = dict(variant='S', width=4, enc_blocks=[1, 1, 1], dec_blocks=[1, 1, 1], fke_width=4, num_columns=1)
TINY_A = dict(embed_dim=12, depths=(1, 1), num_heads=(2, 2), window_size=8, category_size=16, num_tokens=8,
              reducted_dim=4, convffn_kernel_size=3)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def perturb_(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Move the zero-initialised scales off zero so every branch reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return model


def small(**kw) -> DeepRFTv2:
    torch.manual_seed(0)
    return perturb_(DeepRFTv2(**{**SMALL, **kw})).eval()


def _stats(y: torch.Tensor) -> list[float]:
    return [float(y.double().sum()), float(y.double().abs().mean()), float(y[0, 0, 5, 7]), float(y[-1, -1, -3, -2])]


# ------------------------------------------------------------------------------------------ DeepRFTv2
def test_a_tile_covering_the_image_equals_the_whole_image():
    net = small()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        whole = TestTimeProtocol(size_multiple=8)(net, x)
        tiled = TestTimeProtocol(size_multiple=8, tile=48, overlap=16)(net, x)
    assert torch.equal(tiled, whole) and torch.equal(whole, prediction(net(x)))


@pytest.mark.parametrize('batch', [1, 2, 3])
def test_tiles_are_cut_from_the_whole_image_pyramid_and_blended(batch):
    """Tiles of 32 (mid scale: 16) overlapping by 16 over a 32x64 image: 3 tiles at x = 0, 16, 32. The protocol
    equals a hand-rolled loop: each tile runs on the crops of the *whole-image* pyramid (not on a pyramid of the
    crop), and the outputs are blended with the authors' ramps (here: 1 / ramp / 1 along x)."""
    net = small()
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        tiled = TestTimeProtocol(size_multiple=8, tile=32, overlap=16, batch=batch)(net, x)
        b1, b2 = gaussian_pyramid(x, 2)
        outs = [net.forward_pyramid([b1[..., c:c + 32], b2[..., c // 2:c // 2 + 16]]).full[-1] for c in (0, 16, 32)]
    ramp_up, ramp_down = torch.linspace(0, 1, 16), torch.linspace(1, 0, 16)
    w0 = torch.cat([torch.ones(16), ramp_down])
    w1 = torch.cat([ramp_up, ramp_down])
    w2 = torch.cat([ramp_up, torch.ones(16)])
    ref = torch.zeros_like(x)
    for c, out, wt in zip((0, 16, 32), outs, (w0, w1, w2)):
        ref[..., c:c + 32] += out * wt
    # the authors' weights sum to one here, so their blend and ours agree
    torch.testing.assert_close(tiled, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiled[..., :16], outs[0][..., :16], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(tiled, prediction(net(x)), atol=1e-4)


def test_pad_to_the_multiple_and_crop_back():
    net = small()
    x = torch.rand(1, 3, 30, 45)
    with torch.no_grad():
        zeros = TestTimeProtocol(size_multiple=8, pad_mode='constant')(net, x)
        ref = prediction(net(F.pad(x, (0, 3, 0, 2))))[..., :30, :45]
        reflect = TestTimeProtocol(size_multiple=8, pad_mode='reflect')(net, x)
    assert zeros.shape == x.shape and torch.equal(zeros, ref)
    assert reflect.shape == x.shape and not torch.equal(reflect, zeros)


def test_gopro_512_tiles_and_dpdd_fke_windows_give_the_former_numbers():
    """Recorded from the former built-in modes (DeepRFTv2(sub_image=True, sub_image_size=512, overlap_size=128)
    and fke_window=320 / fke_window_overlap=48) on a seeded tiny network."""
    torch.manual_seed(0)
    net = perturb_(DeepRFTv2(**TINY_D), 1, std=0.02).eval()
    x = torch.rand(1, 3, 576, 704, generator=torch.Generator().manual_seed(2))  # 2x2 tiles of 512, overlap 128
    with torch.no_grad():
        y = TestTimeProtocol.from_options({'tile': {'size': 512, 'overlap': 128}}, net)(net, x)
    torch.testing.assert_close(torch.tensor(_stats(y), dtype=torch.float64),
                               torch.tensor([750090.6846, 0.616593, 0.198003, 0.349606], dtype=torch.float64),
                               rtol=2e-6, atol=2e-6)
    torch.manual_seed(0)
    net = perturb_(DeepRFTv2(**TINY_D, fke_window={'size': 320, 'overlap': 48}), 3, std=0.02).eval()
    x = torch.rand(1, 3, 336, 400, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ev = prediction(net(x))
        tr = prediction(net.train()(x))
    torch.testing.assert_close(torch.tensor(_stats(ev), dtype=torch.float64),
                               torch.tensor([239831.2612, 0.594822, 0.671451, 0.987158], dtype=torch.float64),
                               rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(torch.tensor(_stats(tr), dtype=torch.float64),
                               torch.tensor([239818.3219, 0.59479, 0.671479, 0.987113], dtype=torch.float64),
                               rtol=2e-6, atol=2e-6)


# ------------------------------------------------------------------------------------------ ATD
def _atd(fke: bool, scale: int = 2, seed: int = 0) -> ATD:
    torch.manual_seed(seed)
    return perturb_(ATD(upscale=scale, fke=fke, **TINY_A, fke_window={'size': 16, 'overlap': 4}), 5, 0.02).eval()


def test_atd_tiles_are_conv_first_feature_tiles_blended_at_hr():
    model = _atd(True, scale=3)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        y = TestTimeProtocol.from_options({'tile': {'size': 16, 'overlap': 4, 'batch': 4}}, model)(model, x)
        mean = model.mean
        feat = model.conv_first(x - mean)  # conv_first sees the whole image, tiles start after it
        grid = TileGrid((21, 30), 16, 4)
        out = torch.zeros(1, 3, 63, 90)
        for k, (r, c, h, w) in enumerate(grid.boxes()):
            tile = feat[:, :, r:r + h, c:c + w]
            hr = model.upsample(model.conv_after_body(model.forward_body(tile)) + tile)
            out[:, :, 3 * r:3 * (r + h), 3 * c:3 * (c + w)] += hr * grid.weight(k, 3)
    assert len(grid) == 6  # rows [0, 5], cols [0, 12, 14]
    torch.testing.assert_close(y, out + mean, rtol=1e-5, atol=1e-5)


def test_atd_symmetric_padding_is_the_original_atd_and_whole_snaps_windows():
    model = _atd(False)
    pad = TestTimeProtocol(size_multiple=8, pad_mode='symmetric', scale=2)
    whole = TestTimeProtocol(scale=2)
    with torch.no_grad():
        x = torch.rand(1, 3, 16, 24)  # window multiples: both the same
        assert torch.equal(pad(model, x), whole(model, x))
        x = torch.rand(1, 3, 10, 13)
        flipped = torch.cat([x, x.flip(-2)], -2)[..., :16, :]
        flipped = torch.cat([flipped, flipped.flip(-1)], -1)[..., :16]
        assert torch.equal(pad(model, x), model(flipped)[..., :20, :26])
        assert not torch.allclose(pad(model, x), whole(model, x))
        x = torch.rand(2, 3, 3, 2)  # below one window: the network mirror-pads up to it either way
        assert torch.equal(pad(model, x), whole(model, x)) and pad(model, x).shape == (2, 3, 6, 4)


def test_atd_64_16_tiles_pad_and_whole_give_the_former_numbers():
    """Recorded from ATD(test_mode='tile', tile_size=64, tile_overlap=16) / 'pad' / 'whole' before the modes
    moved to the protocol (seeded tiny ATD, 70x100 input, x2)."""
    x = torch.rand(1, 3, 70, 100, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    net = perturb_(ATD(upscale=2, fke=True, **TINY_A), 5, std=0.02).eval()
    with torch.no_grad():
        tiled = TestTimeProtocol.from_options({'tile': {'size': 64, 'overlap': 16, 'batch': 16}}, net)(net, x)
    torch.manual_seed(0)
    net = perturb_(ATD(upscale=2, fke=False, **TINY_A), 5, std=0.02).eval()
    with torch.no_grad():
        pad = TestTimeProtocol.from_options({'size_multiple': 8, 'pad_mode': 'symmetric'}, net)(net, x)
        whole = TestTimeProtocol.from_options({}, net)(net, x)
    for y, ref in ((tiled, [31645.6118, 0.483119, 1.041245, 0.357133]),
                   (pad, [42854.7957, 0.542038, 1.340857, 0.088292]),
                   (whole, [42854.5733, 0.541508, 1.340732, -0.018786])):
        torch.testing.assert_close(torch.tensor(_stats(y), dtype=torch.float64),
                                   torch.tensor(ref, dtype=torch.float64), rtol=2e-6, atol=2e-6)


# ------------------------------------------------------------------------------------------ plain networks
def test_networks_without_hooks_get_tiles_of_the_image():
    up = torch.nn.Upsample(scale_factor=2, mode='nearest')
    x = torch.rand(1, 3, 40, 56)
    y = TestTimeProtocol(tile=16, overlap=8, scale=2, batch=3)(up, x)
    torch.testing.assert_close(y, up(x), rtol=0, atol=1e-6)
    assert TestTimeProtocol(size_multiple=8, pad_to=(48, 64), pad_mode='constant').pad(x).shape[-2:] == (48, 64)


# ------------------------------------------------------------------------------------------ options
def test_from_options_defaults_and_errors():
    net = DeepRFTv2(**TINY_D)
    p = TestTimeProtocol.from_options(None, net)
    assert (p.size_multiple, p.tile, p.scale, p.pad_mode) == (8, None, 1, 'reflect')
    p = TestTimeProtocol.from_options({'tile': {'size': 512, 'overlap': 128, 'batch': 2}, 'pad_mode': 'constant'}, net)
    assert (p.tile, p.overlap, p.batch, p.pad_mode) == (512, 128, 2, 'constant')
    assert TestTimeProtocol.from_options({}, ATD(**TINY_A, upscale=3)).scale == 3
    assert 'tiles 512/128' in p.describe()
    for val, match in (({'tile': {'size': 100}}, 'multiple of 8'), ({'tile': {'size': 64, 'overlap': 64}}, 'overlap'),
                       ({'tile': {'size': 64, 'ovrlap': 8}}, 'Did you mean: overlap'), ({'tile': 64}, 'mapping'),
                       ({'pad_mode': 'wrap'}, 'pad_mode'), ({'tile': {'size': 64, 'batch': 0}}, 'batch')):
        with pytest.raises(ValueError, match=match):
            TestTimeProtocol.from_options(val, net)


@pytest.mark.parametrize('net_opt, names', [
    ({'type': 'DeepRFTv2', 'sub_image': True, 'sub_image_size': 512, 'overlap_size': 128}, 'val.tile.size'),
    ({'type': 'DeepRFTv2', 'fke_window': 320, 'fke_window_overlap': 48}, 'fke_window: {size'),
    ({'type': 'ATD', 'test_mode': 'tile', 'tile_size': 64}, 'val.tile'),
])
def test_test_time_keys_under_network_g_name_the_new_place(net_opt, names):
    with pytest.raises(ValueError, match='val:') as err:
        check_network_options(net_opt)
    assert names in str(err.value)
    check_network_options({'type': 'DeepRFTv2', 'variant': 'B', 'fke_window': {'size': 320, 'overlap': 48}})


def test_an_old_options_file_exits_2_with_the_new_form(tmp_path, capsys):
    from fke_basicsr import launch
    opt = tmp_path / 'old.yml'
    opt.write_text(textwrap.dedent('''\
        name: old
        model_type: DeblurModel
        num_gpu: 0
        datasets: {}
        path: {}
        network_g:
          type: DeepRFTv2
          variant: B
          sub_image: true
          sub_image_size: 512
          overlap_size: 128
        val:
          save_img: false
        '''))
    assert launch.run('test', ['-opt', str(opt)], root_path=str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert 'network_g.sub_image_size -> val.tile.size' in err and 'tile: {size' in err and 'Traceback' not in err


def test_bad_val_protocol_fails_at_options_check():
    from fke_basicsr.models.restoration_model import RestorationModel
    with pytest.raises(ValueError, match='val: pad_mode'):
        RestorationModel.check_options({'val': {'pad_mode': 'wrap'}})
    with pytest.raises(ValueError, match='val: tile.overlap'):
        RestorationModel.check_options({'val': {'tile': {'size': 64, 'overlap': 64}}})
    RestorationModel.check_options({'val': {'tile': {'size': 64, 'overlap': 16, 'batch': 16}, 'size_multiple': 16,
                                            'pad_mode': 'symmetric'}})
