"""The authors' and ATD's option layouts (generated, tests/foreign_options.py) convert to ours: the same networks
(parameter counts, state-dict layout), the progressive schedule kept, every key accounted for, clear refusals."""
import os.path as osp
import sys

import pytest
import torch
import yaml

import fke_basicsr  # noqa: F401  (shims before basicsr)
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402
from fke_basicsr.archs.atd_arch import ATD
from fke_basicsr.archs.deeprftv2_arch import DeepRFTv2
from fke_basicsr.convert_options import (AUTHORS_DEBLUR, AUTHORS_SR, ATD_OWN, ConversionError, convert, detect,
                                         leaf_keys)

sys.path.insert(0, osp.dirname(__file__))
import foreign_options as fo  # noqa: E402

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))


def _layout(net):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def _build(net_opt):
    opt = dict(net_opt)
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt)


def _count(net):
    return sum(p.numel() for p in net.parameters())


def _all_covered(opt, rep):
    missing = [k for k in leaf_keys(opt) if not rep.covers(k)]
    assert not missing, missing


@pytest.mark.parametrize('case, is_train, expected_params, preset', [
    ('gopro_train', True, 30_117_560, 'B'),
    ('gopro_test', False, None, 'B'),
    ('gopro_test_S', False, 21_191_096, 'S'),
    ('defocus_train', True, 21_191_096, 'S'),
])
def test_deblur_files_build_the_authors_network(case, is_train, expected_params, preset):
    opt = {'gopro_train': fo.authors_deblur_train, 'gopro_test': fo.authors_gopro_test,
           'gopro_test_S': lambda: fo.authors_gopro_test('S'), 'defocus_train': fo.authors_defocus_train}[case]()
    assert detect(opt) == AUTHORS_DEBLUR
    out, rep = convert(opt, is_train=is_train, source=f'{case}.yml')
    _all_covered(opt, rep)
    assert out['model_type'] == 'DeblurModel'
    assert out['network_g']['variant'] == preset  # inferred from the block kinds, never a silent default
    for key in ('sub_image', 'sub_image_size', 'overlap_size', 'pad_input', 'return_all'):
        assert key not in out['network_g']  # test-time settings live in val.tile
    if expected_params is None:  # the same -B network as gopro_train (built there)
        return
    net = _build(out['network_g'])
    assert _count(net) == expected_params
    assert _layout(net) == _layout(DeepRFTv2(variant=preset))


def test_deblur_recipe_is_honoured():
    opt = fo.authors_deblur_train()
    out, rep = convert(opt, is_train=True, world_size=8)
    assert out['train']['progressive'] == [{'iters': 450000, 'gt_size': 256, 'batch': 16},
                                           {'iters': 150000, 'gt_size': 512, 'batch': 8}]
    # their mini_batch_sizes are per GPU: one process trains 2 then 1 images per step, as in their code
    out1, _ = convert(opt, is_train=True, world_size=1)
    assert [s['batch'] for s in out1['train']['progressive']] == [2, 1]
    ds = out['datasets']['train']
    assert ds['type'] == 'PairedImageDataset' and ds['use_hflip'] is True and ds['use_rot'] is True
    assert 'geometric_augs' not in ds and 'mini_batch_sizes' not in ds
    assert out['train']['fft_loss_opt'] == {'type': 'FreqLoss', 'loss_weight': 0.01, 'reduction': 'mean'}
    assert out['train']['pixel_opt']['loss_weight'] == 1.0
    assert out['train']['use_grad_clip'] is True and out['train']['grad_clip_norm'] == 0.01
    assert 'gt_for_train' not in out['train'] and 'mixing_augs' not in out['train']
    assert out['val']['tile'] == {'size': 512, 'overlap': 48}
    assert out['val']['size_multiple'] == 8 and out['val']['pad_mode'] == 'constant'
    for key in ('window_size', 'rgb2bgr', 'use_image', 'max_minibatch'):
        assert key not in out['val']
    # our DeblurModel accepts the converted schedule as it stands
    from fke_basicsr.models.deblur_model import DeblurModel
    DeblurModel.check_options({**out, 'is_train': True, 'world_size': 8})
    actions = {k: a for k, a, _ in rep.entries}
    assert actions['datasets.train.mini_batch_sizes'] == 'mapped'
    assert actions['train.mixing_augs'] == 'dropped' and actions['val.rgb2bgr'] == 'dropped'


def test_stage_iterations_are_fitted_to_total_iter():
    opt = fo.authors_deblur_train(iters=(300000, 100000, 100000, 100000), batches=(2, 1, 1, 1),
                                  gt_sizes=(256, 384, 512, 512), total_iter=450000)
    out, _ = convert(opt, is_train=True, world_size=1)
    assert [s['iters'] for s in out['train']['progressive']] == [300000, 100000, 50000]


def test_realblur_frames_pad_and_crop_as_theirs():
    net = fo.authors_deeprft_net('B', sub_image=False, size=1512, overlap=80, train_size=820)
    opt = fo.authors_deblur_train(net=net, iters=(50000, 100000), gt_size=[776, 680], gt_sizes=(512, [776, 680]),
                                  total_iter=150000, val_crop=[776, 680], save_path='/vis/RealBlur_J')
    out, rep = convert(opt, is_train=True, world_size=8)
    _all_covered(opt, rep)
    assert out['datasets']['train']['type'] == 'PairedPadCropDataset'
    assert out['train']['progressive'] == [{'iters': 50000, 'gt_size': 512, 'batch': 16},
                                           {'iters': 100000, 'gt_size': [776, 680], 'batch': 8}]
    assert out['val']['pad_to'] == [776, 680] and 'tile' not in out['val']
    assert out['network_g']['fke_window'] == {'size': 1512, 'overlap': 80} and out['network_g']['variant'] == 'B'
    from fke_basicsr.models.deblur_model import DeblurModel
    DeblurModel.check_options({**out, 'is_train': True, 'world_size': 8})


def test_reds_file_builds_b_with_tlc_kinds_and_one_per_gpu_stage():
    opt = fo.authors_reds_train()
    assert detect(opt) == AUTHORS_DEBLUR
    out, rep = convert(opt, is_train=True, world_size=8, source='train-REDS.yml')
    _all_covered(opt, rep)
    net_opt = out['network_g']
    assert net_opt['variant'] == 'B' and net_opt['mid_block_types'] == 'localnaf'
    assert net_opt['max_enc_block_types'] == ['localnaf', 'LocalNAFEVSBlock_patch', 'LocalNAFEVSBlock_patch']
    assert net_opt['train_size'] == [256, 256] and net_opt['scan_window'] == [512, 512]
    # mini_batch_sizes [1] (per GPU) wins over the loader's batch_size_per_gpu 2, as in their training loop
    assert out['train']['progressive'] == [{'iters': 600000, 'gt_size': 512, 'batch': 8}]
    assert out['val']['tile'] == {'size': 512, 'overlap': 128}
    from fke_basicsr.models.deblur_model import DeblurModel
    DeblurModel.check_options({**out, 'is_train': True, 'world_size': 8})
    net = _build(net_opt)
    assert _count(net) == 30_117_560  # TLC pooling and the windowed scan add no parameters
    assert _layout(net) == _layout(DeepRFTv2(variant='B'))


def test_realblur_r_file_matches_realblur_j():
    outs = {}
    for which in ('J', 'R'):
        opt = fo.authors_realblur_train(which)
        out, rep = convert(opt, is_train=True, world_size=8, source=f'train-RealBlur-{which}.yml')
        _all_covered(opt, rep)
        outs[which] = out
    r, j = outs['R'], outs['J']
    assert r['network_g']['save_memory_encoder'] == [True, True]
    assert j['network_g']['save_memory_encoder'] == [False, True]
    for part in ('train', 'val'):
        assert r[part] == j[part]
    assert r['datasets']['train']['type'] == 'PairedPadCropDataset'
    assert r['datasets']['train']['dataroot_gt'] == '/data/RealBlur/RealBlur_R/train/sharp'
    net = _build(r['network_g'])
    assert _count(net) == 30_117_560
    assert _layout(net) == _layout(DeepRFTv2(variant='B'))


@pytest.mark.parametrize('source, bench', [('Motion_Deblurring/Options/GoPro-DeepRFTv2-test.yml', 'GoPro'),
                                           ('Motion_Deblurring/Options/RealBlur-DeepRFTv2-test.yml', 'RealBlur_J'),
                                           ('Defocus/Options/DeepRFTv2-test.yml', 'DPDD')])
def test_network_only_test_files_get_their_benchmark(source, bench):
    out, rep = convert(fo.authors_gopro_test(), is_train=False, source=source)
    assert out['datasets']['test_1']['name'] == f'{bench}-test'
    assert ('pad_to' in out['val']) == (bench == 'RealBlur_J')
    assert ('calculate_dpdd_psnr' in str(out['val']['metrics'])) == (bench == 'DPDD')
    from fke_basicsr.models.deblur_model import DeblurModel
    DeblurModel.check_options({**out, 'is_train': False})


def test_full_size_atd_is_refused():
    opt = fo.authors_atd_train(2, net=fo.authors_atd_net(2, upsampler='pixelshuffle', embed_dim=210))
    with pytest.raises(ConversionError, match='full-size ATD'):
        convert(opt, is_train=True)


@pytest.mark.parametrize('scale, finetune, expected', [(2, False, 1_163_108), (3, True, 1_169_603),
                                                        (4, True, 1_178_696)])
def test_atd_files_build_atd_light_fke(scale, finetune, expected):
    opt = fo.authors_atd_train(scale, finetune)
    assert detect(opt) == AUTHORS_SR
    out, rep = convert(opt, is_train=True)
    _all_covered(opt, rep)
    assert out['model_type'] == 'RestorationModel'
    assert out['network_g']['fke'] is True and 'FKE' not in out['network_g']  # their capital FKE is our fke
    for key in ('test_mode', 'tile_size', 'tile_overlap', 'tile_batch', 'ker_size', 'sub_image'):
        assert key not in out['network_g']
    assert out['val']['tile'] == {'size': 64, 'overlap': 16}
    assert out['datasets']['train']['gt_size'] == 64 * scale  # their gt_size is the LR patch
    assert out['train']['ema_decay'] == 0.999 and 'mixing_augs' not in out['train']
    net = _build(out['network_g'])
    assert _count(net) == expected
    assert _layout(net) == _layout(ATD(upscale=scale, fke=True))


def test_atd_test_file():
    opt = fo.authors_atd_test(2)
    out, rep = convert(opt, is_train=False)
    _all_covered(opt, rep)
    assert out['model_type'] == 'RestorationModel'
    assert out['path']['param_key_g'] == 'params_ema' and 'param_key' not in out['path']
    assert 'save_path' not in out['val'] and 'train' not in out
    assert 'tile' not in out['val']  # sub_image: false = whole images
    assert _count(_build(out['network_g'])) == 1_163_108


@pytest.mark.parametrize('finetune, last_ker', [(False, True), (True, False)])
def test_atd_x3_files_on_four_gpus(finetune, last_ker):
    """Their 102_* files: x3 from scratch or fine-tuned, 4 GPUs x 8 (last_ker_layers only in the scratch one)."""
    opt = fo.authors_atd_train(3, finetune, batch=8, num_gpu=4)
    if not last_ker:
        del opt['network_g']['last_ker_layers']
    out, rep = convert(opt, is_train=True)
    _all_covered(opt, rep)
    assert out['num_gpu'] == 4 and out['datasets']['train']['batch_size_per_gpu'] == 8
    assert out['datasets']['train']['gt_size'] == 192 and 'progressive' not in out['train']
    assert out['path']['strict_load_g'] is (not finetune)
    assert _count(_build(out['network_g'])) == 1_169_603


@pytest.mark.parametrize('scale, expected', [(3, 1_169_603), (4, 1_178_696)])
def test_atd_test_files_with_five_benchmarks(scale, expected):
    benches = ('Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109')
    net = fo.authors_atd_net(scale, use_checkpoint=True)
    opt = fo.authors_atd_test(scale, net=net, benchmarks=benches)
    out, rep = convert(opt, is_train=False)
    _all_covered(opt, rep)
    assert list(out['datasets']) == ['val', 'test_2', 'test_3', 'test_4', 'test_5']
    assert [d['name'] for d in out['datasets'].values()] == list(benches)
    assert out['datasets']['test_5']['filename_tmpl'] == f'{{}}_LRBI_x{scale}'
    assert out['val']['tile'] == {'size': 64, 'overlap': 16}  # their x3/x4 test files tile the LR input
    assert out['network_g']['upscale'] == scale and out['network_g']['fke_window'] == {'size': 64, 'overlap': 16}
    assert _count(_build(out['network_g'])) == expected


def test_full_size_atd_test_file_is_refused():
    """Their test_ATD_SR_x2: full-size ATD with the FKE after the last convolution only."""
    net = fo.authors_atd_net(2, upsampler='pixelshuffle', embed_dim=210, depths=[6] * 6, num_heads=[6] * 6,
                             category_size=256, num_tokens=128, reducted_dim=20, convffn_kernel_size=5, mlp_ratio=2)
    opt = fo.authors_atd_test(2, net=net)
    opt['network_g'].update(FKE=False, FKE_last=True, last_ker_layers=[2] * 4)
    with pytest.raises(ConversionError, match='full-size ATD') as err:
        convert(opt, is_train=False)
    assert '\n' not in str(err.value)
    light = fo.authors_atd_test(2)
    light['network_g'].update(FKE_last=True)
    with pytest.raises(ConversionError, match='FKE_last'):
        convert(light, is_train=False)


def test_atd_own_files_pass_and_v2_is_refused():
    opt = fo.atd_own_test(2)
    assert detect(opt) == ATD_OWN
    out, rep = convert(opt, is_train=False)
    _all_covered(opt, rep)
    assert out['model_type'] == 'ATDModel' and out['network_g'] == opt['network_g']
    assert _count(_build(out['network_g'])) == 753_204
    with pytest.raises(ConversionError, match='dim_ffn_td'):
        convert(fo.atd_own_test(2, v2=True), is_train=False)


def test_plain_files_are_unchanged():
    opt = yaml.safe_load(open(osp.join(ROOT, 'options', 'train', 'GoPro', 'DeepRFTv2-B.yml')))
    assert detect(opt) is None
    out, rep = convert(opt)
    assert out == opt and not rep.entries


@pytest.mark.parametrize('edit, match', [
    (lambda o: o['train']['mixing_augs'].update(mixup=True), 'mixup'),
    (lambda o: o['network_g'].update(deblur_kernel_mode='ker_max'), 'deblur_kernel_mode'),
    (lambda o: o['network_g'].update(num_local_unet=1), 'num_local_unet'),
    (lambda o: o['network_g'].update(dims=[32, 48, 48]), 'dims'),
    (lambda o: o['network_g'].update(my_new_key=1), 'my_new_key'),
    (lambda o: o['train'].update(gt_for_train=False), 'gt_for_train'),
    (lambda o: o['datasets']['val'].update(crop_size=256), 'crop_size'),
    (lambda o: o['val'].update(rgb2bgr=False), 'rgb2bgr'),
])
def test_unsupported_values_are_refused(edit, match):
    opt = fo.authors_deblur_train()
    edit(opt)
    with pytest.raises(ConversionError, match=match):
        convert(opt, is_train=True)


@pytest.mark.skipif(torch.cuda.device_count() >= 8, reason='needs a machine with fewer than 8 GPUs')
def test_num_gpu_above_the_machine_is_one_clear_line():
    with pytest.raises(ConversionError) as err:
        convert(fo.authors_deblur_train(num_gpu=8), is_train=True, check_gpus=True)
    msg = str(err.value)
    assert 'num_gpu: 8' in msg and '\n' not in msg


def test_cli_writes_the_converted_file_and_refuses_with_exit_2(tmp_path, capsys):
    from fke_basicsr.convert_options import main
    src = tmp_path / 'train-GoPro.yml'
    src.write_text(yaml.safe_dump(fo.authors_deblur_train()))
    dst = tmp_path / 'ours.yml'
    assert main([str(src), '-o', str(dst)]) == 0
    out = capsys.readouterr().out
    assert 'mapped  datasets.train.mini_batch_sizes' in out and 'dropped train.mixing_augs' in out
    ours = yaml.safe_load(dst.read_text())
    assert ours['model_type'] == 'DeblurModel' and ours['network_g']['variant'] == 'B'
    assert ours['train']['progressive'][0] == {'iters': 450000, 'gt_size': 256, 'batch': 16}
    assert main([str(src), '-o', str(src)]) == 2  # never overwrites its input
    bad = fo.authors_deblur_train()
    bad['train']['mixing_augs']['mixup'] = True
    src.write_text(yaml.safe_dump(bad))
    assert main([str(src)]) == 2
    assert 'mixup' in capsys.readouterr().err
