#!/usr/bin/env bash
# GPU check of the selective-scan backends (docs/scan_backends.md), one command on a CUDA machine:
#   bash scripts/gpu_check_scan.sh            # about 5-10 minutes on one modern GPU
#   MAMBA_SDIST=/path/mamba_ssm-2.2.4.tar.gz bash scripts/gpu_check_scan.sh   # also build and time mamba-ssm
# 1. equality to 'ref' of the Triton kernel (and mamba-ssm's, if installed) on CUDA, outputs and gradients;
# 2. scan fwd and fwd+bwd at L=33,024, D=96, N=8, batch 8: torch vs triton (vs mamba), time and peak memory;
# 3. DeepRFTv2-B training step at 256² (authors' reversible flags): it/s and peak memory, torch vs triton scan.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -n "${MAMBA_SDIST:-}" ]; then  # optional: build mamba-ssm from a carried sdist for the H100/H200 arch only
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAMBA_FORCE_BUILD=TRUE \
    "$PY" -m pip install -q --no-build-isolation "$MAMBA_SDIST" || echo "mamba-ssm build failed; continuing without it"
fi
"$PY" -m fke_basicsr.env | grep -E '^(torch|triton|mamba-ssm|cuda|selective)'
echo "== 1. equality to ref on CUDA"
"$PY" -m pytest -q -p no:cacheprovider tests/test_selective_scan_triton.py tests/test_selective_scan.py -k "cuda or mamba"
echo "== 2. scan at L=33024, D=96, N=8, batch 8"
"$PY" scripts/benchmark_scan.py --device cuda --batch 8 --impls torch,triton,mamba --lengths 33024 --repeats 5 \
  --timeout 300
echo "== 3. DeepRFTv2-B training step, 256², batch 1"
for backend in torch triton; do
  echo "-- scan backend: $backend"
  FKE_SCAN_BACKEND=$backend "$PY" scripts/benchmark_train.py --variants B --modes yml --size 256 --steps 5 \
    --device cuda
done
