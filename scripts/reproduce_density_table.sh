#!/usr/bin/env bash
# The Exemplar VAE paper's density table, Fashion-MNIST column (VAE, VampPrior, HVAE, HVAE + VampPrior,
# ConvHVAE, ConvHVAE + VampPrior) under the authors' protocol, then the table (measured beside published)
# and the validation curves with the published values marked (scripts/density_table.py).
#
#   scripts/reproduce_density_table.sh                                  # every row, seed 0, the full protocol
#   ROWS="vae vampprior" SEEDS="0 1 2 3 4" scripts/reproduce_density_table.sh
#   EXTRA="--num_epochs=20" scripts/reproduce_density_table.sh          # a shorter budget
#
# Environment: RUNS (runs/density; one workdir per row and seed, RUNS/<row>/seed<N>), ROWS, SEEDS,
# EXTRA (flags appended to every run). A finished run trains nothing again (seconds to find that out); a
# stopped one is resumed exactly by the same command, so the script can be interrupted and restarted any time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/density}
ROWS=${ROWS:-"vae vampprior hvae hvae_vampprior convhvae convhvae_vampprior"}
SEEDS=${SEEDS:-0}
EXTRA=${EXTRA:-}

for row in $ROWS; do
  for seed in $SEEDS; do
    workdir="$RUNS/$row/seed$seed"
    # No check here: the training loop itself starts nothing for a run that has ended (early-stopped or at its
    # last epoch) and writes no row twice, while a stopped one resumes (a test row that scripts/evaluate.py
    # appended to a stopped run does not make it finished).
    echo "== $workdir"
    # shellcheck disable=SC2086
    $PYTHON -m experiments.vae --flagfile="experiments/configs/density_$row.cfg" --workdir="$workdir" \
      --seed="$seed" $EXTRA
  done
done

$PYTHON scripts/density_table.py --runs="$RUNS"
