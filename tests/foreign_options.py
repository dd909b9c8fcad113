"""Generators of option dicts in the layouts of the DeepRFTv2 authors' and ATD's files (their keys and recipe values,
built here from the key lists in docs/migrating.md; dataset paths are parameters)."""
from __future__ import annotations

import copy

NAF_ROWS = ['naf', 'naf', 'naf']


def _per_col(row, n=2):
    return [list(row) for _ in range(n)]


def authors_deeprft_net(blocks: str = 'B', sub_image=True, size=512, overlap=48, train_size=512,
                        dims=48, enc=(1, 4, 8), dec=(8, 4, 1), save_enc=(False, True, True, True),
                        patch_size=None) -> dict:
    """Their DeepRFTv2 network_g (83 keys): 'B' = NAFEVSBlocks in the max scale, 'S' = naf only, 'localnaf';
    'localB' = the -B layout with TLC-pooled kinds (localnaf, LocalNAFEVSBlock_patch; their REDS file).
    ``patch_size`` (the scan window) defaults to ``train_size``."""
    if blocks == 'B':
        max_enc, max_dec, mid = ['naf', 'NAFEVSBlock', 'NAFEVSBlock'], ['NAFEVSBlock', 'NAFEVSBlock', 'naf'], NAF_ROWS
    elif blocks == 'localB':
        evs = 'LocalNAFEVSBlock_patch'
        max_enc, max_dec, mid = ['localnaf', evs, evs], [evs, evs, 'localnaf'], ['localnaf'] * 3
    elif blocks == 'S':
        max_enc, max_dec, mid = NAF_ROWS, NAF_ROWS, NAF_ROWS
    else:
        max_enc = max_dec = mid = ['localnaf'] * 3
    ncols = 4 if blocks == 'localnaf' else 2  # DPDD's lists carry 4 rows; only the first 2 columns are built
    local = ['localnaf_fouriercomplex'] * 4
    return {
        'type': 'DeepRFTv2', 'up2scale': False, 'frozen_encoder': False, 'inp_channels': 3, 'out_channels': 3,
        'dims': [dims] * 3, 'num_global_unet': 2, 'num_kernel_est': 0, 'num_local_unet': 0,
        'deblur_kernel_mode': 'ker_max_mid', 'deblur_kernel': True, 'deblur_mask': False, 'latent_sharp': True,
        'inp_feature': 'feature', 'deconv_feature': 'feature', 'norm_type': 'LayerNorm', 'spatial_add': False,
        'spatial_decoder': False, 'num_ker': 48, 'pad_size': 32, 'dims_ker': [48, 48, 48], 'ks': [0, 0, 0],
        'sub_image': sub_image, 'sub_image_size': [size, size], 'overlap_size': [overlap, overlap],
        'downsample': 'concat', 'downsample_ker': 'concat_nodownsample', 'downsample_local': 'concat',
        'downsample_mode': 'conv', 'upsample_mode': 'conv1x1_shuffle', 'fuse_downsample_mode': 'conv',
        'fuse_upsample_mode': 'conv1x1_shuffle', 'fuse_method_encoder': 'Fuse_in_Encoder',
        'fuse_method_decoder': 'DownSample2latent', 'num_local_decoder': 0, 'enc_local_layers': [1, 1, 2, 2],
        'dec_local_layers': [2, 2, 1, 1], 'sub_dec_width': 48, 'baseblock_enc_local': local,
        'baseblock_dec_local': local, 'num_heads_enc': [1, 2, 4, 8], 'num_heads_dec': [8, 4, 2, 1],
        'baseblock_enc_small_global': _per_col(NAF_ROWS), 'baseblock_dec_small_global': _per_col(NAF_ROWS),
        'baseblock_enc_mid_global': _per_col(mid, ncols), 'baseblock_dec_mid_global': _per_col(mid, ncols),
        'baseblock_enc_max_global': _per_col(max_enc, ncols), 'baseblock_dec_max_global': _per_col(max_dec, ncols),
        'baseblock_enc_small_local': NAF_ROWS, 'baseblock_dec_small_local': NAF_ROWS,
        'baseblock_enc_mid_local': ['naf'] * 4, 'baseblock_dec_mid_local': ['naf'] * 4,
        'baseblock_enc_max_local': ['naf'] * 4, 'baseblock_dec_max_local': ['naf'] * 4,
        'baseblock_enc_ker': ['EVSS'] * 4, 'baseblock_dec_ker': ['EVSS'] * 4,
        'enc_small_layers': _per_col(enc), 'dec_small_layers': _per_col(dec),
        'enc_mid_layers': _per_col(enc, ncols), 'dec_mid_layers': _per_col(dec, ncols),
        'enc_max_layers': _per_col(enc, ncols), 'dec_max_layers': _per_col(dec, ncols),
        'enc_ker_layers': [1, 1, 1, 1], 'dec_ker_layers': [1, 1, 1, 1], 'enc_light_layers': [1, 1, 1],
        'prior_model': None, 'drop_path': 0.0, 'small_scale': False, 'mid_scale': True, 'small_enc': False,
        'mid_flip': False, 'save_memory': False, 'save_memory_global_encoder': list(save_enc),
        'save_memory_global_decoder': list(save_enc), 'save_memory_local_encoder': [False, False, True, True],
        'save_memory_local_decoder': [False, False, True, True], 'save_memory_ker': [True] * 4,
        'save_memory_local_ker': [False, False, True, True], 'kernel_size': 65,
        'train_size': [train_size, train_size], 'patch_size': [patch_size or train_size] * 2, 'frozen_global': False,
        'frozen_kernel': False, 'multiscale_enc': False,
    }


def _paired(name, gt, lq, **extra):
    return {'name': name, 'type': 'Dataset_PairedImage', 'dataroot_gt': gt, 'dataroot_lq': lq, **extra,
            'io_backend': {'type': 'disk'}}


def authors_deblur_train(gt='/data/GoPro/train/sharp', lq='/data/GoPro/train/blur', vgt='/data/GoPro/test/sharp',
                         vlq='/data/GoPro/test/blur', net=None, num_gpu=8, batches=(2, 1), iters=(450000, 150000),
                         gt_size=512, gt_sizes=(256, 512), total_iter=600000, name='DeepRFTv2-B-GoPro',
                         save_path=None, val_crop=-1) -> dict:
    """Their train-GoPro (defaults) / Defocus training file layout."""
    train_ds = _paired('TrainSet', gt, lq, geometric_augs=True, filename_tmpl='{}')
    train_ds.update({'use_shuffle': True, 'num_worker_per_gpu': 8, 'batch_size_per_gpu': max(batches),
                     'mini_batch_sizes': list(batches), 'iters': list(iters), 'gt_size': gt_size,
                     'gt_sizes': list(gt_sizes), 'dataset_enlarge_ratio': 1, 'prefetch_mode': None})
    val = {'window_size': 8, 'val_freq': 5000.0, 'save_img': False, 'rgb2bgr': True, 'use_image': True,
           'max_minibatch': 8,
           'metrics': {'psnr_GoPro': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    if save_path:
        val['save_path'] = save_path
    return {
        'name': name, 'model_type': 'ImageCleanModel', 'scale': 1, 'num_gpu': num_gpu, 'manual_seed': 100,
        'datasets': {'train': train_ds,
                     'val': _paired('ValSet', vgt, vlq, crop_size=val_crop, crop_sizes=[-1] * len(batches))},
        'network_g': net or authors_deeprft_net('B'),
        'path': {'pretrain_network_g': None, 'strict_load_g': False, 'resume_state': None},
        'train': {'total_iter': total_iter, 'warmup_iter': -1, 'use_grad_clip': True, 'gt_for_train': True,
                  'scheduler': {'type': 'TrueCosineAnnealingLR', 'T_max': total_iter, 'eta_min': 1e-7},
                  'mixing_augs': {'mixup': False, 'mixup_beta': 1.2, 'use_identity': True},
                  'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-3, 'betas': [0.9, 0.9]},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  'fft_loss_opt': {'type': 'FourierLoss', 'loss_weight': 0.01, 'reduction': 'mean'}},
        'val': val,
        'logger': {'print_freq': 1000, 'save_checkpoint_freq': 10000.0, 'use_tb_logger': True,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def authors_reds_train(**kw) -> dict:
    """Their train-REDS layout: TLC-pooled -B kinds, TLC size 256 with a 512 scan window, and one stage whose
    per-GPU batch (1) is below the loader's batch_size_per_gpu (2)."""
    net = authors_deeprft_net('localB', overlap=128, train_size=256, patch_size=512)
    args = dict(net=net, batches=(1,), iters=(600000,), gt_size=512, gt_sizes=(512,), total_iter=600000,
                name='REDS-DeepRFTv2-B-512', gt='/data/REDS/train/sharp', lq='/data/REDS/train/blur',
                vgt='/data/REDS/test/sharp', vlq='/data/REDS/test/blur')
    args.update(kw)
    opt = authors_deblur_train(**args)
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    return opt


def authors_realblur_train(which='J', **kw) -> dict:
    """Their train-RealBlur-J / -R layout: frames padded to 776 x 680, whole-frame validation, FKE window 1512.
    The R file also has flat small-scale counts, an empty prior_model and every column memory-saving."""
    net = authors_deeprft_net('B', sub_image=False, size=1512, overlap=80, train_size=820)
    if which == 'R':
        net.update(enc_small_layers=[1, 4, 8], dec_small_layers=[8, 4, 1],
                   baseblock_dec_ker=['LocalNAFEVSBlock_patch'] * 4, save_memory_global_encoder=[True] * 4,
                   save_memory_local_encoder=[True] * 4, save_memory_local_decoder=[True] * 4)
    root = f'/data/RealBlur/RealBlur_{which}'
    args = dict(net=net, iters=(50000, 100000), gt_size=[776, 680], gt_sizes=(512, [776, 680]), total_iter=150000,
                val_crop=[776, 680], save_path=f'/vis/RealBlur_{which}', gt=f'{root}/train/sharp',
                lq=f'{root}/train/blur', vgt=f'{root}/test/sharp', vlq=f'{root}/test/blur',
                name=f'RealBlur_{which}-DeepRFTv2')
    args.update(kw)
    return authors_deblur_train(**args)


def authors_gopro_test(blocks='B') -> dict:
    """Their GoPro test file: network_g only (their val_gopro.py script supplies data and weights)."""
    net = authors_deeprft_net(blocks, overlap=128, save_enc=(True,) * 4)
    net['get_ker'] = False
    net['baseblock_dec_ker'] = ['localnaf_fouriercomplex'] * 4
    return {'network_g': net}


def authors_defocus_train(**kw) -> dict:
    net = authors_deeprft_net('localnaf', sub_image=False, size=320, overlap=48, train_size=320)
    args = dict(net=net, batches=(1,), iters=(150000,), gt_size=640, gt_sizes=(640,), total_iter=150000,
                name='SingleDefocus_DeepRFTv2', save_path='/data/visualization/DPDD')
    args.update(kw)
    return authors_deblur_train(**args)


def authors_atd_net(scale: int, **over) -> dict:
    net = {'type': 'ATD', 'upscale': scale, 'in_chans': 3, 'img_size': 64, 'embed_dim': 48, 'depths': [6, 6, 6, 6],
           'num_heads': [4, 4, 4, 4], 'window_size': 16, 'category_size': 128, 'num_tokens': 64, 'reducted_dim': 8,
           'convffn_kernel_size': 7, 'img_range': 1.0, 'mlp_ratio': 1, 'upsampler': 'pixelshuffledirect',
           'resi_connection': '1conv', 'use_checkpoint': False, 'ker_size': 64, 'overlap_size': [16, 16],
           'FKE': True, 'FKE_last': False, 'sub_image': True, 'norm_type': 'LayerNorm',
           'enc_ker_layers': [1, 1, 1, 1], 'last_ker_layers': [1, 1, 1, 1], 'baseblock_enc_ker': ['EVSS'] * 4,
           'save_memorys': [False] * 6}
    net.update(over)
    return net


def authors_atd_train(scale=2, finetune=False, gt='/data/DF2K/HR', lq='/data/DF2K/LR', vgt='/data/Set14/HR',
                      vlq='/data/Set14/LR', net=None, batch=None, lr_patch=64, total_iter=None,
                      num_gpu=None) -> dict:
    """Their 101_ATD_light_SRx2_scratch / 10x_..._finetune / _scratch layout (gt_size = the LR patch there)."""
    batch = batch or (8 if finetune else 4)
    total = total_iter or (250000 if finetune else 500000)
    train_ds = {'task': 'SR', 'name': 'DF2K', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                'filename_tmpl': f'{{}}x{scale}', 'io_backend': {'type': 'disk'}, 'mini_batch_sizes': [batch],
                'iters': [total], 'gt_size': lr_patch, 'gt_sizes': [lr_patch], 'use_hflip': True, 'use_rot': True,
                'use_shuffle': True, 'num_worker_per_gpu': 8, 'batch_size_per_gpu': batch,
                'dataset_enlarge_ratio': 1, 'prefetch_mode': None}
    return {
        'name': f'10{scale - 1}_ATD_light-FKE_SRx{scale}_{"finetune" if finetune else "scratch"}',
        'model_type': 'ImageCleanModel', 'scale': scale, 'num_gpu': num_gpu or (4 if finetune else 8),
        'manual_seed': 0,
        'datasets': {'train': train_ds,
                     'val': {'name': 'Set14', 'type': 'PairedImageDataset', 'dataroot_gt': vgt, 'dataroot_lq': vlq,
                             'filename_tmpl': f'{{}}x{scale}', 'crop_size': -1, 'crop_sizes': [-1],
                             'io_backend': {'type': 'disk'}}},
        'network_g': net or authors_atd_net(scale),
        'path': {'pretrain_network_g': 'experiments/x2/models/net_g_latest.pth' if finetune else None,
                 'strict_load_g': not finetune, 'resume_state': None},
        'train': {'ema_decay': 0.999,
                  'optim_g': {'type': 'AdamW', 'lr': 2e-4 if finetune else 5e-4, 'weight_decay': 0,
                              'betas': [0.9, 0.9]},
                  'mixing_augs': {'mixup': False, 'mixup_beta': 1.2, 'use_identity': True},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [total // 2, total * 4 // 5], 'gamma': 0.5},
                  'total_iter': total, 'warmup_iter': 10000 if finetune else 20000,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 5000.0, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 100, 'save_checkpoint_freq': 5000.0, 'use_tb_logger': True,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def authors_atd_test(scale=2, gt='/data/Set5/HR', lq='/data/Set5/LR', weights='/ckpts/ATD-SR/x2.pth', net=None,
                     num_gpu=1, benchmarks=('Set5',)) -> dict:
    """Their SR/Options/test/test_ATD_lightSR_x* layout; ``benchmarks``: one set each, the first as `val`
    and then test_2, test_3, ... (Manga109 with its _LRBI_ file names), as in their x3/x4 files."""
    net = net or authors_atd_net(scale, use_checkpoint=True, sub_image=False, get_ker=True)
    net.pop('FKE_last', None)
    net.pop('last_ker_layers', None)
    train = authors_atd_train(scale)['train']
    return {
        'name': f'test_ATD_lightSR_x{scale}', 'model_type': 'ImageCleanModel_infernece', 'scale': scale,
        'num_gpu': num_gpu, 'manual_seed': 0,
        'datasets': {('val' if i == 0 else f'test_{i + 1}'): {
            'name': bench, 'type': 'PairedImageDataset', 'dataroot_gt': gt.replace('Set5', bench),
            'dataroot_lq': lq.replace('Set5', bench),
            'filename_tmpl': f'{{}}_LRBI_x{scale}' if bench == 'Manga109' else f'{{}}x{scale}', 'crop_size': -1,
            'crop_sizes': [-1], 'io_backend': {'type': 'disk'}} for i, bench in enumerate(benchmarks)},
        'network_g': net,
        'path': {'pretrain_network_g': weights, 'strict_load_g': True, 'param_key': 'params_ema'},
        'val': {'save_img': False, 'suffix': None, 'save_path': '/results/ATD-FKE/Lightx2',
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}},
        'train': copy.deepcopy(train),
    }


def atd_own_test(scale=2, gt='datasets/Set5/HR', lq='datasets/Set5/LR', weights=None, v2=False) -> dict:
    """ATD's own options/test/10x_ATD_light_SRx*.yml layout (v1; ``v2`` adds ATD v2.0's dim_ffn_td)."""
    net = {'type': 'ATD', 'upscale': scale, 'in_chans': 3, 'img_size': 64, 'embed_dim': 48, 'depths': [6, 6, 6, 6],
           'num_heads': [4, 4, 4, 4], 'window_size': 16, 'category_size': 128, 'num_tokens': 64, 'reducted_dim': 8,
           'convffn_kernel_size': 7, 'img_range': 1.0, 'mlp_ratio': 1, 'upsampler': 'pixelshuffledirect',
           'resi_connection': '1conv', 'use_checkpoint': True}
    if v2:
        net.update(num_heads=[3, 3, 3, 3], num_tokens=128, reducted_dim=12, dim_ffn_td=4)
    return {'name': f'10{scale - 1}_ATD_light_SRx{scale}', 'model_type': 'ATDModel', 'scale': scale, 'num_gpu': 1,
            'manual_seed': 0,
            'datasets': {'test_1': {'name': 'Set5', 'type': 'PairedImageDataset', 'dataroot_gt': gt,
                                    'dataroot_lq': lq, 'io_backend': {'type': 'disk'}}},
            'network_g': net,
            'path': {'pretrain_network_g': weights, 'strict_load_g': True, 'param_key_g': 'params_ema'},
            'val': {'save_img': True, 'suffix': None,
                    'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}}}
