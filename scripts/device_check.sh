#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on an H200): installs what the GPU image lacks from .device/
# (made here by scripts/prepare_device_check.sh), then prints
#   1. the fast part of the test suite, run on the GPU;
#   2. scripts/benchmark.py in float32 and in bfloat16 (the VAE, density, DCGAN and ConvHVAE steps; the k=5000
#      evaluation in float32 only);
#   3. one epoch of the default VAE (experiments/configs/vae_fashion_mnist.cfg), its rows and wall time.
# Each part has its own time limit, so one that hangs cannot take the others with it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::DeprecationWarning
PYTHON=${PYTHON:-python3}
if [ -d .device/wheels ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export GEN_JAX_FASHION_MNIST_MANUAL_DIR=${GEN_JAX_FASHION_MNIST_MANUAL_DIR:-$PWD/.device/fashion-mnist}
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
"$PYTHON" -c "import jax, flax, optax, orbax.checkpoint as ocp, tensorflow_datasets as tfds
print('devices:', jax.devices()); print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
'tfds', tfds.__version__)" || exit 1

echo "== 1. fast tests on the GPU"
timeout 150 "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/test_objectives.py tests/test_convolution.py \
  tests/test_likelihood.py tests/test_density.py -k "not flagfile" 2>&1 | tail -n 15

echo "== 2. benchmark, float32 then bfloat16"
for dtype in float32 bfloat16; do
  timeout 130 "$PYTHON" scripts/benchmark.py --compute_dtype=$dtype --matmul_size=8192 --dispatches=10 2>&1 |
    grep -v -i warning
done

echo "== 3. one epoch of the default VAE"
rm -rf "$OUT/vae_epoch"
start=$(date +%s)
timeout 120 "$PYTHON" -m experiments.vae --flagfile=experiments/configs/vae_fashion_mnist.cfg \
  --workdir="$OUT/vae_epoch" --num_epochs=1 2>&1 | tail -n 4
echo "one epoch of vae_fashion_mnist.cfg: $(( $(date +%s) - start )) s wall, start-up and evaluation included"
tail -n 2 "$OUT/vae_epoch/metrics.jsonl" 2>/dev/null
