"""Prepare the HIDE test set (Shen et al., ICCV 2019) from the distributed ``HIDE_dataset`` folder (docs/evaluation.md).

Input : HIDE_dataset/test/{test-close-ups,test-long-shot}/<name>.png and HIDE_dataset/GT/<name>.png
        (GT files carry the same names as the blurry ones; train/ is not used by Table 1)
Output: <dst>/HIDE/test/{blur,sharp}/<name>.png   (close-ups and long-shot pooled: 2,025 pairs)

    python scripts/data_preparation/prepare_hide.py --src /data/HIDE_dataset --dst datasets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_common import LayoutError, export_pairs, list_images, report, require_dir, run_cli  # noqa: E402

SUBSETS = ('test-close-ups', 'test-long-shot')
EXPECTED = {'test': 2025}


def hide_pairs(src: Path) -> list[tuple[str, Path, Path]]:
    """(name, blur, GT) for the pooled test set; the GT is looked up by stem in HIDE_dataset/GT."""
    require_dir(src / 'test', 'the test/ folder of HIDE_dataset (test/{test-close-ups,test-long-shot})')
    gt = list_images(src / 'GT', 'the GT/ folder of HIDE_dataset (sharp images named like the blurry ones)')
    blur: dict[str, Path] = {}
    for sub in SUBSETS:
        for stem, path in list_images(src / 'test' / sub, f'HIDE_dataset/test/{sub}').items():
            if stem in blur:
                raise LayoutError(f'{stem!r} appears in both {blur[stem].parent} and {path.parent}; names must be '
                                  'unique across the two test subsets')
            blur[stem] = path
    missing = sorted(set(blur) - set(gt))
    if missing:
        raise LayoutError(f'{len(missing)} HIDE test image(s) have no GT/<same name>, e.g. {missing[:3]}')
    return [(s, blur[s], gt[s]) for s in sorted(blur)]  # GT/ also holds train targets: only test names count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--src', type=Path, required=True, help='the HIDE_dataset folder as extracted')
    ap.add_argument('--dst', type=Path, required=True, help='datasets root; HIDE/ is created inside')
    args = ap.parse_args(argv)
    pairs = hide_pairs(args.src)
    out = args.dst / 'HIDE' / 'test'
    export_pairs(pairs, out / 'blur', out / 'sharp', 'HIDE test')
    report('HIDE', {'test': len(pairs)}, EXPECTED)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
