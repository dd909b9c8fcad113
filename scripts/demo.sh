#!/usr/bin/env bash
# The main job: set up .venv (if needed), build the demo blur dataset from scikit-image's photos (if missing),
# train a small DeepRFTv2 on CPU for a few minutes, validate, and print PSNR/SSIM of input vs output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/python scripts/run_demo.py "$@"
