"""Prepare DPDD (Abuolaim & Brown, ECCV 2020) for single-image defocus deblurring (docs/evaluation.md, Table 4).

Input : <src>/{train,val,test}_c/{source,target}/<name>.png  (the distributed dd_dp_dataset_canon folder,
        16-bit PNGs; the _l/_r dual-pixel views are not used by Table 4)
        --labels DIR holding indoor_labels.npy / outdoor_labels.npy (as shipped with Restormer): 1-based
        indices into the natural-sorted test list (37 indoor + 39 outdoor)
Output: <dst>/DPDD/{train,val,test}/{inputC,target}/<name>.png  as 8-bit, the way the authors read the data
        (OpenCV's colour read keeps the high byte: v8 = floor(v16 / 256)); <dst>/DPDD/test/{indoor,outdoor}.txt

    python scripts/data_preparation/prepare_dpdd.py --src /data/dd_dp_dataset_canon --dst datasets \
        --labels /data/Restormer/Defocus_Deblurring/Datasets/test/DPDD
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_common import (LayoutError, export_pairs, list_images, natural_sorted, pair_by_stem,  # noqa: E402
                         report, run_cli)

EXPECTED = {'train': 350, 'val': 74, 'test': 76}


def to_8bit(img: np.ndarray) -> np.ndarray:
    """16-bit → 8-bit by keeping the high byte (== cv2.imread's default colour flag); 8-bit stays as is."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise LayoutError(f'DPDD images must be 3-channel colour, got shape {img.shape}')
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype == np.uint8:
        return img
    raise LayoutError(f'DPDD images must be 8- or 16-bit PNG, got dtype {img.dtype}')


def dpdd_pairs(src: Path, split: str) -> list[tuple[str, Path, Path]]:
    base = src / f'{split}_c'
    inputs = list_images(base / 'source', f'DPDD {split}_c/source (defocused centre-view images)', ('.png',))
    targets = list_images(base / 'target', f'DPDD {split}_c/target (all-in-focus images)', ('.png',))
    return pair_by_stem(inputs, targets, f'DPDD {split}_c')


def split_labels(names: list[str], labels_dir: Path) -> dict[str, list[str]]:
    """indoor/outdoor name lists from Restormer's 1-based index files over the natural-sorted test names."""
    order = natural_sorted(names)
    out = {}
    for group in ('indoor', 'outdoor'):
        f = labels_dir / f'{group}_labels.npy'
        if not f.is_file():
            raise LayoutError(f'expected {f.name} (1-based indices into the natural-sorted test list) in {labels_dir}')
        idx = np.load(f).astype(int).ravel()
        if idx.size and (idx.min() < 1 or idx.max() > len(order)):
            raise LayoutError(f'{f.name} holds indices {idx.min()}..{idx.max()}; expected 1..{len(order)} (1-based)')
        out[group] = [order[i - 1] for i in idx]
    both = set(out['indoor']) & set(out['outdoor'])
    if both or len(out['indoor']) + len(out['outdoor']) != len(order):
        raise LayoutError(f'the indoor/outdoor labels must split the {len(order)} test images exactly once each; '
                          f'got {len(out["indoor"])} + {len(out["outdoor"])} with {len(both)} in both')
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--src', type=Path, required=True, help='the dd_dp_dataset_canon folder as extracted')
    ap.add_argument('--dst', type=Path, required=True, help='datasets root; DPDD/ is created inside')
    ap.add_argument('--splits', nargs='+', default=['train', 'val', 'test'], choices=['train', 'val', 'test'])
    ap.add_argument('--labels', type=Path, help='folder with indoor_labels.npy / outdoor_labels.npy (Table 4)')
    args = ap.parse_args(argv)
    todo = {split: dpdd_pairs(args.src, split) for split in args.splits}
    groups = split_labels([n for n, _, _ in todo['test']], args.labels) if 'test' in todo and args.labels else None
    for split, pairs in todo.items():
        out = args.dst / 'DPDD' / split
        export_pairs(pairs, out / 'inputC', out / 'target', f'DPDD {split}', input_fn=to_8bit, target_fn=to_8bit,
                     input_ext='.png', target_ext='.png')
    if groups:
        for group, names in groups.items():
            (args.dst / 'DPDD' / 'test' / f'{group}.txt').write_text('\n'.join(names) + '\n')
    elif 'test' in todo:
        print('note: no --labels given, so DPDD/test/{indoor,outdoor}.txt were not written; Table 4 needs them')
    report('DPDD', {k: len(v) for k, v in todo.items()}, EXPECTED)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
