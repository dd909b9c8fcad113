#!/usr/bin/env bash
# Create .venv with the tested CPU stack and the package (editable). Idempotent: a stamp keyed on
# requirements.txt + pyproject.toml skips the work when nothing changed. Usage: scripts/setup_venv.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
stamp="$VENV/.fke_setup_$(cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)${extra:+_test}"
[ -f "$stamp" ] && exit 0
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# A fresh venv has setuptools 65 and no wheel: BasicSR's sdist then fails with "invalid command 'bdist_wheel'".
"$VENV/bin/pip" install -q --disable-pip-version-check -U "setuptools>=70.1" wheel
# BasicSR 1.4.2 must be built without build isolation (else pip installs a CUDA torch into a build env).
"$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation -r requirements.txt
"$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e ".$extra"
# The test extra's packages (pyproject.toml [test]): pytest, numba (in requirements.txt) and, on Linux, triton,
# whose CPU interpreter runs the Triton scan's tests.
if [ -n "$extra" ]; then
  test_pkgs=("pytest>=7")
  [ "$(uname -s)" = Linux ] && test_pkgs+=("triton>=3.0")
  "$VENV/bin/pip" install -q --disable-pip-version-check "${test_pkgs[@]}"
fi
touch "$stamp"
echo "setup: $(( $(date +%s) - start )) s, venv $(du -sh "$VENV" | cut -f1)"
