#!/usr/bin/env bash
# The mode-coverage table (GUIDE §6, PacGAN/VEEGAN protocol): every GAN loss, the R1 penalty and PacGAN
# packing on the ring of 8 and the grid of 25 Gaussians, each over several seeds, at the flagfiles'
# settings (gan_ring.cfg, gan_grid.cfg) with only the named flags changed. Writes a Markdown table with
# the published rows beside it.
#
#   scripts/reproduce_mode_coverage.sh [RUNS_DIR [TABLE.md]]      (default runs/mode_coverage, its table.md)
#
# Environment: SEEDS (default "0 1 2 3 4"), DATASETS (default "ring grid"), VARIANTS (default: all names
# below), EXTRA_FLAGS (added to every run, e.g. "--num_steps=2000" for a quick look). A finished run is not
# repeated and an unfinished one resumes from its checkpoint, so the script can be stopped and restarted.
# Budget (measured here, 2 shared cores): a grid seed takes ~3-6 wall-minutes, a ring seed ~1-3; all
# variants x 5 seeds x 2 datasets is several hours: run subsets with the variables above.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/mode_coverage}
TABLE=${2:-$RUNS/table.md}
SEEDS=${SEEDS:-0 1 2 3 4}
DATASETS=${DATASETS:-ring grid}
PYTHON=${PYTHON:-.venv/bin/python}

# name -> flags on top of the flagfile. The flagfiles use the non-saturating loss (the grid's with packing 2).
declare -A FLAGS=(
  [minimax]="--loss=minimax"
  [non_saturating]="--loss=non_saturating"
  [hinge]="--loss=hinge"
  [least_squares]="--loss=least_squares"
  [wgan_gp]="--loss=wasserstein --gradient_penalty_weight=10"
  [r1]="--loss=non_saturating --r1_weight=1"
  [packing1]="--packing=1"
  [packing2]="--packing=2"
  [packing4]="--packing=4"
)
VARIANTS=${VARIANTS:-minimax non_saturating hinge least_squares wgan_gp r1 packing1 packing2 packing4}

for dataset in $DATASETS; do
  for variant in $VARIANTS; do
    for seed in $SEEDS; do
      workdir="$RUNS/$dataset/$variant/seed$seed"
      if [[ -f "$workdir/samples.npy" ]]; then continue; fi
      echo "== $dataset $variant seed $seed"
      mkdir -p "$workdir"
      start=$(date +%s)
      # shellcheck disable=SC2086  # The variant's flags are meant to split.
      "$PYTHON" -m experiments.gan --flagfile="experiments/configs/gan_$dataset.cfg" --workdir="$workdir" \
        --seed="$seed" ${FLAGS[$variant]} ${EXTRA_FLAGS:-} > "$workdir/log.txt" 2>&1 || echo "   failed: see $workdir/log.txt"
      echo $(( $(date +%s) - start )) > "$workdir/seconds.txt"
    done
  done
done

"$PYTHON" - "$RUNS" "$TABLE" <<'EOF'
"""Averages the last test row of every run into the table; published rows from GUIDE §6 beside."""
import json, os, sys
import warnings

import numpy as np

warnings.simplefilter("ignore", RuntimeWarning)  # nanmean/nanstd of a column that is all NaN: shown as nan.

runs, table = sys.argv[1:3]
PUBLISHED = {
    "ring": [("GAN (PacGAN paper)", "6.3", "98.2", ""), ("PacGAN2 (PacGAN paper)", "7.9", "95.6", ""),
             ("GAN (VEEGAN paper)", "1", "", ""), ("VEEGAN", "8", "52.9", "")],
    "grid": [("GAN (PacGAN paper)", "17.3", "94.8", ""), ("PacGAN4 (PacGAN paper)", "24.8", "93.6", ""),
             ("VEEGAN", "24.6", "40", "")],
}
NUM_MODES = {"ring": 8, "grid": 25}
lines = ["| data | method | modes | high quality (%) | reverse KL | seeds | wall s / seed |", "|---|---|---|---|---|---|---|"]
for dataset in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
  if dataset not in NUM_MODES:
    continue
  for variant in sorted(os.listdir(os.path.join(runs, dataset))):
    results, seconds = [], []
    for seed_dir in sorted(os.listdir(os.path.join(runs, dataset, variant))):
      path = os.path.join(runs, dataset, variant, seed_dir)
      if not os.path.exists(os.path.join(path, "samples.npy")):
        continue
      rows = [json.loads(l) for l in open(os.path.join(path, "metrics.jsonl")) if l.endswith("\n")]
      last = [r for r in rows if r["split"] == "test" and "modes" in r][-1]
      results.append((last["modes"], 100 * last["high_quality"], float(last["reverse_kl"])))
      if os.path.exists(os.path.join(path, "seconds.txt")):
        seconds.append(float(open(os.path.join(path, "seconds.txt")).read()))
    if not results:
      continue
    values = np.array(results)
    per_seed = f"{np.mean(seconds):.0f}" if seconds else "—"
    cell = lambda column, digits: f"{np.nanmean(values[:, column]):.{digits}f} ± {np.nanstd(values[:, column]):.{digits}f}"
    lines.append(f"| {dataset} | {variant} (measured) | {cell(0, 1)} / {NUM_MODES[dataset]} | {cell(1, 1)} | "
                 f"{cell(2, 3)} | {len(values)} | {per_seed} |")
  for name, modes, quality, kl in PUBLISHED.get(dataset, []):
    lines.append(f"| {dataset} | {name} (published) | {modes} | {quality or '—'} | {kl or '—'} | | |")
os.makedirs(os.path.dirname(table) or ".", exist_ok=True)
with open(table, "w") as f:
  f.write("Mode coverage, 2500 samples per run, mean ± std over seeds (PacGAN/VEEGAN protocol, GUIDE §6).\n\n")
  f.write("\n".join(lines) + "\n")
print(open(table).read())
EOF
