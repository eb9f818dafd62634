#!/usr/bin/env bash
# Burda et al. (2016) Table 1: VAE and IWAE with k = 1, 5, 50 samples, one and two stochastic layers, then
# a table of test log-likelihoods (the k = 5000 bound, negated: NLL in nats) beside the published MNIST ones.
#
#   scripts/reproduce_iwae.sh                       # MNIST, the full protocol (3280 epochs; needs internet once)
#   DATASET=fashion_mnist EXTRA="--num_epochs=3" scripts/reproduce_iwae.sh   # offline, a short budget
#
# Environment: DATASET (mnist), RUNS (runs/iwae, one workdir per row), LAYERS ("1 2"), SAMPLES ("1 5 50"),
# OBJECTIVES ("elbo iwae"; elbo with k samples is Table 1's "VAE, k"),
# EXTRA (flags appended to every run, e.g. --num_epochs, --final_iwae_k, --num_train_examples).
# Re-running resumes unfinished runs and skips finished ones (the training loop's resume).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATASET=${DATASET:-mnist}
RUNS=${RUNS:-runs/iwae}
LAYERS=${LAYERS:-"1 2"}
SAMPLES=${SAMPLES:-"1 5 50"}
OBJECTIVES=${OBJECTIVES:-"elbo iwae"}
EXTRA=${EXTRA:-}

for layers in $LAYERS; do
  for k in $SAMPLES; do
    for objective in $OBJECTIVES; do
      if [[ $objective == iwae && $k == 1 ]]; then continue; fi  # L_1 is the ELBO: the VAE row.
      workdir="$RUNS/${DATASET}_${layers}layer_${objective}_k${k}"
      echo "== $workdir"
      # shellcheck disable=SC2086
      $PYTHON -m experiments.vae --flagfile="experiments/configs/iwae_mnist_${layers}layer.cfg" \
        --workdir="$workdir" --dataset="$DATASET" --objective="$objective" --num_importance_samples="$k" $EXTRA
    done
  done
done

$PYTHON - "$RUNS" "$DATASET" <<'PY'
import glob, os, sys
from gen_jax import files
runs, dataset = sys.argv[1], sys.argv[2]
# Burda et al. 2016, Table 1 (MNIST test NLL, nats).
published = {(1, "elbo", 1): 86.76, (1, "elbo", 5): 86.47, (1, "elbo", 50): 86.35, (1, "iwae", 5): 85.54,
             (1, "iwae", 50): 84.78, (2, "elbo", 1): 85.33, (2, "elbo", 5): 85.01, (2, "elbo", 50): 84.78,
             (2, "iwae", 5): 83.89, (2, "iwae", 50): 82.90}
print(f"\n| layers | objective | k | {dataset} test NLL (nats) | iwae_k | active units | examples seen | "
      "published MNIST NLL |")
print("|---|---|---|---|---|---|---|---|")
for workdir in sorted(glob.glob(os.path.join(runs, f"{dataset}_*layer_*_k*"))):
  name = os.path.basename(workdir)[len(dataset) + 1:]
  layers, objective, k = int(name[0]), name.split("_")[1], int(name.split("_k")[-1])
  rows = [row for row in files.read_json_lines(os.path.join(workdir, "metrics.jsonl")) if "log_likelihood" in row]
  if not rows:
    continue
  row = max(rows, key=lambda r: (r["step"], r["iwae_k"]))
  units = str(row["active_units"]) if layers == 1 else f"{row['active_units_1']}+{row['active_units_2']}"
  label = "VAE" if objective == "elbo" else "IWAE"
  print(f"| {layers} | {label} | {k} | {-row['log_likelihood']:.2f} | {row['iwae_k']} | {units} | "
        f"{row['examples_seen']} | {published.get((layers, objective, k), '')} |")
PY
