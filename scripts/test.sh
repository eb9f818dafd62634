#!/usr/bin/env bash
# Sets up what the tests need (the .venv, the package, the Fashion-MNIST files) and runs the whole suite.
# Idempotent: the second run skips every installed part. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Two workers, a whole file each (tests/conftest.py orders the files); `-n 0` after these runs it in one process.
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "$@" tests
