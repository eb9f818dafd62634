#!/usr/bin/env bash
# Sets up what it needs (.venv, gen_jax, Debian's Fashion-MNIST files), trains the default VAE briefly
# (2 epochs of experiments/configs/vae_fashion_mnist.cfg) and says where the curve and the images are.
# Idempotent: a second run finds the finished run in runs/demo and only prints.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
WORKDIR=${1:-runs/demo}
.venv/bin/python -m experiments.vae --flagfile=experiments/configs/vae_fashion_mnist.cfg \
  --workdir="$WORKDIR" --num_epochs=2
.venv/bin/python - "$WORKDIR" <<'PY'
import os, sys
from gen_jax import files
workdir = sys.argv[1]
rows = files.read_json_lines(os.path.join(workdir, "metrics.jsonl"))
test = [row for row in rows if row["split"] == "test"][-1]
images = sorted(os.listdir(os.path.join(workdir, "images")))
print(f"\ntest ELBO after {test['examples_seen']} training examples: {test['elbo']:.2f} nats "
      f"(recon {test['recon']:.2f}, KL {test['kl']:.2f})")
print(f"ELBO curve:      {workdir}/images/elbo_curve.png")
print(f"reconstructions: {workdir}/images/{[n for n in images if n.startswith('reconstructions')][-1]}")
print(f"samples:         {workdir}/images/{[n for n in images if n.startswith('samples')][-1]}")
print(f"all metrics:     {workdir}/metrics.jsonl   (TensorBoard: {workdir}/tensorboard)")
PY
