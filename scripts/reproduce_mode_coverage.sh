#!/usr/bin/env bash
# The mode-coverage table (PacGAN/VEEGAN protocol): every GAN loss, the R1 penalty and PacGAN
# packing on the ring of 8 and the grid of 25 Gaussians, each over several seeds, at the flagfiles'
# settings (gan_ring.cfg, gan_grid.cfg) with only the named flags changed. Writes a Markdown table with
# the published rows beside it.
#
#   scripts/reproduce_mode_coverage.sh [RUNS_DIR [TABLE.md]]      (default runs/mode_coverage, its table.md)
#
# Environment: SEEDS (default "0 1 2 3 4"), DATASETS (default "ring grid"), VARIANTS (default: all names
# below), JOBS (runs at once, default 1), EXTRA_FLAGS (added to every run, e.g. "--num_steps=2000" for a quick
# look). A finished run (one with samples.npy) is not started again, so a run finished at a shorter
# EXTRA_FLAGS budget stays at it: give a full run its own RUNS_DIR. An unfinished one resumes from its
# checkpoint, so the script can be stopped and restarted. Each run's wall and CPU seconds go to its
# seconds.txt and the table, its output to RUNS/logs/; a run that fails makes the script end in an error.
# Budget (measured here, 2 cores): a ring run ~1 minute, a grid run ~320-420 CPU-s (~3 minutes alone on both
# cores); the whole table ~5 CPU-hours: run subsets with the variables above, JOBS=2 to use both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/mode_coverage}
TABLE=${2:-$RUNS/table.md}
SEEDS=${SEEDS:-0 1 2 3 4}
DATASETS=${DATASETS:-ring grid}
PYTHON=${PYTHON:-.venv/bin/python}

# name -> flags on top of the flagfile. `flagfile` is the flagfile itself (non-saturating; the grid's with
# packing 2); the loss variants keep the flagfile's packing; a packing variant the flagfile already has is
# the `flagfile` row and is not run twice.
declare -A FLAGS=(
  [flagfile]=""
  [minimax]="--loss=minimax"
  [hinge]="--loss=hinge"
  [least_squares]="--loss=least_squares"
  [wgan_gp]="--loss=wasserstein --gradient_penalty_weight=10"
  [r1]="--r1_weight=1"
  [packing1]="--packing=1"
  [packing2]="--packing=2"
  [packing4]="--packing=4"
)
VARIANTS=${VARIANTS:-flagfile minimax hinge least_squares wgan_gp r1 packing1 packing2 packing4}
JOBS=${JOBS:-1}
for variant in $VARIANTS; do
  if [[ -z ${FLAGS[$variant]+set} ]]; then
    echo "error: VARIANTS names $variant; allowed: ${!FLAGS[*]}" >&2
    exit 2
  fi
done

# Each run's output goes to RUNS/logs/, outside its workdir: a refused command (exit status 2, bad input, such as
# a wrong EXTRA_FLAGS) must leave an unfinished run's workdir as it was. Runs that failed are listed in FAILED,
# and the script ends with an error after writing the table of the others.
FAILED="$RUNS/logs/failed.txt"
mkdir -p "$RUNS/logs"
rm -f "$FAILED"

run_one() {  # dataset variant seed
  # seconds.txt: a line of wall, user CPU and system CPU seconds per invocation that ran (not a refused one);
  # a resumed run adds a line, and the time of an invocation that was killed is lost.
  local workdir="$RUNS/$1/$2/seed$3" log="$RUNS/logs/$1-$2-seed$3.txt" TIMEFORMAT="%R %U %S" seconds status=0
  echo "== $1 $2 seed $3"
  # shellcheck disable=SC2086  # The variant's flags are meant to split.
  seconds=$( { time "$PYTHON" -m experiments.gan --flagfile="experiments/configs/gan_$1.cfg" --workdir="$workdir" \
      --seed="$3" ${FLAGS[$2]} ${EXTRA_FLAGS:-} >> "$log" 2>&1; } 2>&1 ) || status=$?
  if (( status != 2 )) && [[ -d $workdir ]]; then
    echo "$seconds" >> "$workdir/seconds.txt"
  fi
  if (( status != 0 )); then
    echo "   failed (exit status $status): see $log"
    echo "$1 $2 seed$3: exit status $status, $log" >> "$FAILED"
  fi
}

running=0
for dataset in $DATASETS; do
  for variant in $VARIANTS; do
    if [[ $variant == packing* ]] && grep -qxF -- "${FLAGS[$variant]}" "experiments/configs/gan_$dataset.cfg"; then
      continue  # The flagfile's own packing: the `flagfile` row.
    fi
    for seed in $SEEDS; do
      if [[ -f "$RUNS/$dataset/$variant/seed$seed/samples.npy" ]]; then continue; fi
      run_one "$dataset" "$variant" "$seed" &
      if (( ++running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
    done
  done
done
wait

"$PYTHON" - "$RUNS" "$TABLE" <<'EOF'
"""Averages the last test row of every run into the table; published rows (PacGAN, VEEGAN papers) beside."""
import os, sys
import warnings

import numpy as np

from gen_jax import files

warnings.simplefilter("ignore", RuntimeWarning)  # nanmean/nanstd of a column that is all NaN: shown as nan.

runs, table = sys.argv[1:3]
PUBLISHED = {
    "ring": [("GAN (PacGAN paper)", "6.3", "98.2", ""), ("PacGAN2 (PacGAN paper)", "7.9", "95.6", ""),
             ("GAN (VEEGAN paper)", "1", "", ""), ("VEEGAN", "8", "52.9", "")],
    "grid": [("GAN (PacGAN paper)", "17.3", "94.8", ""), ("PacGAN4 (PacGAN paper)", "24.8", "93.6", ""),
             ("VEEGAN", "24.6", "40", "")],
}
NUM_MODES = {"ring": 8, "grid": 25}
ORDER = ["flagfile", "minimax", "hinge", "least_squares", "wgan_gp", "r1", "packing1", "packing2", "packing4"]
lines = ["| data | method | modes | seeds with all modes | high quality (%) | reverse KL | wall / CPU s per seed |",
         "|---|---|---|---|---|---|---|"]
for dataset in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
  if dataset not in NUM_MODES:
    continue
  variants = os.listdir(os.path.join(runs, dataset))
  for variant in [v for v in ORDER if v in variants] + sorted(set(variants) - set(ORDER)):
    results, seconds = [], []
    for seed_dir in sorted(os.listdir(os.path.join(runs, dataset, variant))):
      path = os.path.join(runs, dataset, variant, seed_dir)
      if not os.path.exists(os.path.join(path, "samples.npy")):
        continue
      rows = files.read_json_lines(os.path.join(path, "metrics.jsonl"))
      last = [r for r in rows if r["split"] == "test" and "modes" in r][-1]
      results.append((last["modes"], 100 * last["high_quality"], float(last["reverse_kl"])))
      if os.path.exists(os.path.join(path, "seconds.txt")):  # Lines of "wall user system" (old runs: wall).
        calls = [[float(t) for t in line.split()] for line in open(os.path.join(path, "seconds.txt")) if line.strip()]
        if calls:  # Empty while a run is going, or after an invocation was killed: its time is unknown.
          seconds.append((sum(t[0] for t in calls), sum(sum(t[1:]) if len(t) == 3 else np.nan for t in calls)))
    if not results:
      continue
    values = np.array(results)
    per_seed = " / ".join("—" if np.isnan(t) else f"{t:.0f}" for t in np.mean(seconds, axis=0)) if seconds else "—"
    cell = lambda column, digits: (f"{np.nanmean(values[:, column]):.{digits}f} ± "
                                   f"{np.nanstd(values[:, column]):.{digits}f}")
    all_modes = int(np.sum(values[:, 0] == NUM_MODES[dataset]))
    lines.append(f"| {dataset} | {variant} (measured) | {cell(0, 1)} / {NUM_MODES[dataset]} | "
                 f"{all_modes} of {len(values)} | {cell(1, 1)} | {cell(2, 3)} | {per_seed} |")
  for name, modes, quality, kl in PUBLISHED.get(dataset, []):
    lines.append(f"| {dataset} | {name} (published) | {modes} | | {quality or '—'} | {kl or '—'} | |")
os.makedirs(os.path.dirname(table) or ".", exist_ok=True)
with open(table, "w") as f:
  f.write("Mode coverage, 2500 samples per run, mean ± std over seeds (PacGAN/VEEGAN protocol).\n\n")
  f.write("\n".join(lines) + "\n")
print(open(table).read())
EOF

if [[ -s $FAILED ]]; then
  echo "error: $(wc -l < "$FAILED") run(s) failed, listed in $FAILED; the table holds the others" >&2
  exit 1
fi
