"""The Fashion-MNIST density table (Exemplar VAE paper) as measured here, beside the published numbers, and a
figure of the validation curves with the published values marked.

  .venv/bin/python scripts/density_table.py --runs=runs/density [--output=runs/density/table.md]

Reads RUNS/<row>/seed<N>/metrics.jsonl only (a run still training is listed with its progress). A row's
measured number is the mean (± standard deviation over seeds) of each seed's k-sample bound of its newest
measured checkpoint (test rows with a `log_likelihood`: written when training ends, by a rerun with a new
--final_iwae_k, or by `scripts/evaluate.py --iwae_k=...`), the largest k there if it was measured with
several; its k is shown, since only k = 5000 is the published protocol.
"""

import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import main as experiment_main  # noqa: E402
from gen_jax import config as config_lib, files, plots  # noqa: E402
from gen_jax.errors import UserError  # noqa: E402
from gen_jax.families import vae  # noqa: E402
from gen_jax.runtime import loop, metrics as metrics_lib, workdir as workdir_lib  # noqa: E402

flags.DEFINE_string("runs", "runs/density", "Folder of the runs: RUNS/<row>/seed<N>.")
flags.DEFINE_string("output", None, "Markdown file for the table (default: RUNS/table.md).")
flags.DEFINE_string("figure", None, "PNG of the validation curves (default: RUNS/validation_curves.png).")
FLAGS = flags.FLAGS

# Norouzi, Fleet & Norouzi (NeurIPS 2020), density-estimation table, Fashion-MNIST column: test
# log-likelihood in nats (k = 5000), mean ± std of 5 runs.
PUBLISHED = {
    "vae": ("VAE, Gaussian prior", -228.70, 0.15),
    "vampprior": ("VAE, VampPrior", -227.35, 0.05),
    "hvae": ("HVAE, Gaussian prior", -227.37, 0.10),
    "hvae_vampprior": ("HVAE, VampPrior", -226.72, 0.08),
    "convhvae": ("ConvHVAE, Gaussian prior", -225.38, 0.08),
    "convhvae_vampprior": ("ConvHVAE, VampPrior", -224.67, 0.03),
}


def seed_summary(rows, settings):
  """What one seed's rows say: epochs trained, the best validation ELBO and its epoch, its newest measured
  log-likelihood and k, the training wall time, and whether training has ended (the early-stopping rule, replayed
  on the validation rows with the run's settings from config.json, or the last epoch reached)."""
  validation = [row for row in rows if row["split"] == "validation"]
  if not validation:
    return None
  steps_per_epoch = validation[0]["step"]  # The density flagfiles validate once an epoch.
  warmup_steps = config_lib.from_flat_dict(vae.Config, settings).kl_warmup_end_step(steps_per_epoch)
  record, stopped = {}, False
  for row in validation:
    record, stopped = loop.early_stopping_update(record, row["step"], row["elbo"],
                                                 settings.get("early_stopping_patience", 0), warmup_steps)
  measured = [row for row in rows if row["split"] == "test" and "log_likelihood" in row]
  # The newest checkpoint measured, at its largest k: a later, cheaper bound of it never replaces k = 5000.
  number = max(measured, key=lambda row: (row["step"], row["iwae_k"])) if measured else {}
  epochs = validation[-1]["step"] // steps_per_epoch
  return {"epochs": epochs, "best_epoch": record["best_step"] // steps_per_epoch,
          "best_validation_elbo": record["best"], "hours": validation[-1]["wall_time"] / 3600,
          "log_likelihood": number.get("log_likelihood"), "iwae_k": number.get("iwae_k"),
          "finished": stopped or epochs >= settings.get("num_epochs", 0)}


def table(runs):
  lines = ["| model | published | measured here | k | seeds | epochs (best / trained) | best validation ELBO | "
           "training hours per seed |", "|---|---|---|---|---|---|---|---|"]
  curves = {}
  for row, (name, mean, std) in PUBLISHED.items():
    seeds = {}
    for workdir in sorted(glob.glob(os.path.join(runs, row, "seed*"))):
      summary = seed_summary(metrics_lib.read_rows(os.path.join(workdir, "metrics.jsonl")),
                             workdir_lib.read_config(workdir) or {})
      if summary:
        seeds[os.path.basename(workdir)] = summary
        curves[f"{row}/{os.path.basename(workdir)}"] = (
            metrics_lib.read_rows(os.path.join(workdir, "metrics.jsonl")), mean)
    if not seeds:
      lines.append(f"| {name} | {mean:.2f} ± {std:.2f} | not run | | 0 | | | |")
      continue
    values = [s["log_likelihood"] for s in seeds.values() if s["log_likelihood"] is not None]
    ks = sorted({s["iwae_k"] for s in seeds.values() if s["iwae_k"]})
    measured = (f"{np.mean(values):.2f}" + (f" ± {np.std(values):.2f}" if len(values) > 1 else "")) if values \
        else "not yet evaluated"
    state = ", ".join(f"{s['best_epoch']} / {s['epochs']}" + ("" if s["finished"] else " (not finished)")
                      for s in seeds.values())
    best = ", ".join(f"{s['best_validation_elbo']:.2f}" for s in seeds.values())
    hours = ", ".join(f"{s['hours']:.1f}" for s in seeds.values())
    lines.append(f"| {name} | {mean:.2f} ± {std:.2f} | {measured} | {','.join(map(str, ks))} | {len(seeds)} | "
                 f"{state} | {best} | {hours} |")
  return "\n".join(lines) + "\n", curves


# The figure's y-range runs this far below the lowest published value (the KL warm-up's early epochs sit tens of
# nats lower and would flatten the converging part), lower still where a curve ends lower (a young run stays
# visible), and a nat above the highest curve or published value.
FIGURE_NATS_BELOW_PUBLISHED = 30.0


def _spread_labels(values, min_gap):
  """`values` (descending) moved apart to at least `min_gap` each, downwards (the highest stays put, inside
  the plot's range), so labels of nearly equal values do not overlap."""
  placed = []
  for value in values:
    placed.append(value if not placed else min(value, placed[-1] - min_gap))
  return placed


def figure(curves, path):
  """Each seed's validation ELBO against epochs, one colour per row, and each row's published test
  log-likelihood as a dashed line labelled at the right edge (labels spread apart where values nearly
  coincide, as the HVAE's −227.37 and the VampPrior's −227.35 do). Returns the y-range drawn, (bottom, top)."""
  plt = plots.pyplot()
  fig, axis = plt.subplots(figsize=(9, 5.5))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  row_names = sorted({label.split("/")[0] for label in curves})
  colour_of = {row: colours[index % len(colours)] for index, row in enumerate(row_names)}
  published, plotted, last_values = {}, [], []
  for label, (rows, published_value) in sorted(curves.items()):
    row = label.split("/")[0]
    validation = [metric_row for metric_row in rows if metric_row["split"] == "validation"]
    steps_per_epoch = validation[0]["step"]
    elbos = [metric_row["elbo"] for metric_row in validation]
    axis.plot([metric_row["step"] / steps_per_epoch for metric_row in validation], elbos, color=colour_of[row],
              linewidth=1, label=f"{label} validation ELBO")
    published[row] = published_value
    plotted.extend(elbos)
    last_values.append(elbos[-1])
  for row, value in published.items():
    axis.axhline(value, color=colour_of[row], linestyle="--", linewidth=0.8)
  top = max(*plotted, *published.values()) + 1
  bottom = max(min(plotted), min(min(published.values()) - FIGURE_NATS_BELOW_PUBLISHED, min(last_values) - 5))
  axis.set_ylim(bottom, top)
  ordered = sorted(published.items(), key=lambda item: -item[1])
  for (row, value), y in zip(ordered, _spread_labels([value for _, value in ordered], 0.035 * (top - bottom))):
    axis.annotate(f"{PUBLISHED[row][0]}: {value:.2f}", xy=(1.0, value), xytext=(1.01, y), fontsize=7,
                  color=colour_of[row], xycoords=("axes fraction", "data"), textcoords=("axes fraction", "data"),
                  va="center")
  axis.set_xlabel("epoch")
  axis.set_ylabel("nats per image")
  axis.set_title("Validation ELBO; dashed: the published test log-likelihood of the same row")
  axis.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return bottom, top


def main(argv):
  del argv
  if not os.path.isdir(FLAGS.runs):
    raise UserError(f"--runs={FLAGS.runs} is not a directory; allowed: the RUNS folder of "
                    "scripts/reproduce_density_table.sh")
  text, curves = table(FLAGS.runs)
  output = FLAGS.output or os.path.join(FLAGS.runs, "table.md")
  figure_path = FLAGS.figure or os.path.join(FLAGS.runs, "validation_curves.png")
  for path in (output, figure_path):  # Both folders first: a missing one must not fail after the table is written.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files.write_text(output, text)
  print(text, end="")
  if curves:
    figure(curves, figure_path)


if __name__ == "__main__":
  experiment_main.run(main)
