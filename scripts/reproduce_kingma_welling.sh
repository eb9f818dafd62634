#!/usr/bin/env bash
# Kingma & Welling (2014) Fig. 2: the lower bound per datapoint, train and test, against training samples
# evaluated (log axis), one panel per latent size, from kingma_welling_mnist.cfg.
#
#   scripts/reproduce_kingma_welling.sh                                      # MNIST, 100 epochs per size
#   DATASET=fashion_mnist LATENTS="3 10 20" EXTRA="--num_epochs=5" scripts/reproduce_kingma_welling.sh
#
# Environment: DATASET (mnist), RUNS (runs/kingma_welling), LATENTS ("3 5 10 20 200"), EXTRA (flags added
# to every run), YLIM (the y range; default -150,-100 for MNIST as in the paper, automatic otherwise).
# Writes $RUNS/kingma_welling_$DATASET.png. Re-running resumes unfinished runs and skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATASET=${DATASET:-mnist}
RUNS=${RUNS:-runs/kingma_welling}
LATENTS=${LATENTS:-"3 5 10 20 200"}
EXTRA=${EXTRA:-}
if [[ $DATASET == mnist ]]; then YLIM=${YLIM:--150,-100}; else YLIM=${YLIM:-}; fi

workdirs=() labels=()
for latent in $LATENTS; do
  workdir="$RUNS/${DATASET}_z${latent}"
  echo "== $workdir"
  # shellcheck disable=SC2086
  $PYTHON -m experiments.vae --flagfile=experiments/configs/kingma_welling_mnist.cfg --workdir="$workdir" \
    --dataset="$DATASET" --latent_dim="$latent" $EXTRA
  workdirs+=("$workdir") labels+=("N_z = $latent")
done

$PYTHON scripts/plot_curves.py --workdirs="$(IFS=,; echo "${workdirs[*]}")" \
  --labels="$(IFS=,; echo "${labels[*]}")" --panels --metric=elbo ${YLIM:+--ylim=$YLIM} \
  --output="$RUNS/kingma_welling_${DATASET}.png"
