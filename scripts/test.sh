#!/usr/bin/env bash
# Sets up what the tests need (the .venv, the package, the Fashion-MNIST files) and runs the whole suite.
# Idempotent: the second run skips every installed part. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@" tests
