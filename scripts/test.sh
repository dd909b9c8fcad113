#!/usr/bin/env bash
# The test command: set up .venv (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh --test
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
[ $rc -eq 5 ] && echo "error: pytest collected no tests" >&2
exit $rc
