"""ELBO (or another metric) against training examples seen, from runs' metrics.jsonl, into one PNG.

  .venv/bin/python scripts/plot_curves.py --workdirs=runs/a,runs/b --output=curves.png \
      [--labels=A,B] [--metric=elbo] [--panels] [--reference_csv=published.csv] [--ylim=-150,-100]

Train rows are dashed, validation rows dotted, test rows solid; a run's test `log_likelihood` (the k-sample
bound, written after training or by scripts/evaluate.py) is drawn as a star on the ELBO plot. `--panels`
gives each run its own panel with a shared y-axis, like Kingma & Welling's Fig. 2 (one panel per latent
size). The reference CSV (header line, then examples_seen,value rows) adds a published curve in black to
every panel. A curve is labelled by its directory's name and the run's family (from config.json, where the
run recorded one); only metrics.jsonl is read, so a run without checkpoints (or still training) can be
plotted.
"""

import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import flags  # noqa: E402

from experiments import main as experiment_main  # noqa: E402
from gen_jax import config as config_lib, plots  # noqa: E402
from gen_jax.errors import UserError  # noqa: E402
from gen_jax.runtime import metrics as metrics_lib, workdir as workdir_lib  # noqa: E402

flags.DEFINE_list("workdirs", None, "Run directories (each with a metrics.jsonl).")
flags.DEFINE_list("labels", None, "Legend / panel title per workdir (default: the directory names).")
flags.DEFINE_string("metric", "elbo", "Metric to plot (elbo, log_likelihood, recon, kl, ...).")
flags.DEFINE_string("output", "curves.png", "PNG file to write.")
flags.DEFINE_string("reference_csv", None, "Published curve: header line, then examples_seen,value rows.")
flags.DEFINE_bool("panels", False, "One panel per workdir (shared y-axis) instead of one axis for all.")
flags.DEFINE_bool("log_x", True, "Logarithmic x-axis (training examples seen).")
flags.DEFINE_list("ylim", None, "low,high for the y-axis.")
FLAGS = flags.FLAGS


def _read(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise UserError(f"--workdirs entry {workdir} has no metrics.jsonl; allowed: run directories")
  return metrics_lib.read_rows(path)


# Row keys that are no metric: where and when a row was written, and the k of a bound (a setting of the row).
_NOT_METRICS = {"step", "examples_seen", "split", "iwae_k", *metrics_lib.TIMING_KEYS}


def plotted_metrics(rows):
  """The metrics `rows` hold values of: their numeric keys that are no row bookkeeping."""
  return {key for row in rows for key, value in row.items()
          if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def check_metric(metric, runs_rows):
  """Refuses a `metric` that none of the runs has (a typo, or a bound no run computed), before anything is
  drawn: otherwise the plot would be empty and nothing would say why."""
  available = set().union(*(plotted_metrics(rows) for rows in runs_rows))
  if metric not in available:
    raise UserError(f"--metric={metric} is in none of the runs' metrics.jsonl; allowed: a metric they have "
                    f"({', '.join(sorted(available)) or 'none yet'})")


def default_label(workdir):
  """The directory's name, and the run's family where its config.json records one."""
  name = os.path.basename(os.path.normpath(workdir))
  try:
    stored = workdir_lib.read_config(workdir) or {}
  except UserError:  # A damaged config.json does not stop a plot of the metrics.
    stored = {}
  family = stored.get(config_lib.FAMILY_KEY)
  return f"{name} [{family}]" if family else name


def _draw(axis, rows, metric, colour, label):
  """The split curves of `metric` (`plots.draw_split_curves`), and the test log-likelihood stars on an ELBO
  plot."""
  plots.draw_split_curves(axis, rows, metric, colour, label)
  if metric == "elbo":
    stars = [(r["examples_seen"], r["log_likelihood"], r.get("iwae_k")) for r in rows if "log_likelihood" in r]
    for x, y, k in stars:
      axis.plot([x], [y], "*", color=colour, markersize=9)
    if stars:
      k = stars[-1][2]  # A VAE's bound names its k; a mixture's log-likelihood is exact.
      axis.plot([], [], "*", color=colour, label=f"{label} (test log p(x), {'exact' if k is None else f'k={k}'})")


def plot(workdirs, output, metric="elbo", labels=None, reference_csv=None, panels=False, log_x=True, ylim=None):
  labels = labels or [default_label(workdir) for workdir in workdirs]
  if len(labels) != len(workdirs):
    raise UserError(f"--labels has {len(labels)} entries for {len(workdirs)} workdirs; allowed: one per workdir")
  reference = None
  if reference_csv:
    if not os.path.isfile(reference_csv):
      raise UserError(f"--reference_csv={reference_csv} does not exist; allowed: a CSV file")
    reference = plots.read_reference_curve(reference_csv)
  runs_rows = [_read(workdir) for workdir in workdirs]
  check_metric(metric, runs_rows)
  count = len(workdirs) if panels else 1
  figure, axes = plt.subplots(1, count, figsize=(3.2 * count + 1.5, 3.6), sharey=True, squeeze=False)
  for index, (rows, label) in enumerate(zip(runs_rows, labels)):
    axis = axes[0, index if panels else 0]
    _draw(axis, rows, metric, f"C{0 if panels else index}", label)
    if panels:
      axis.set_title(label, fontsize=9)
  for axis in axes[0]:
    if reference is not None:
      axis.plot(reference[:, 0], reference[:, 1], "k:", label="published")
    if log_x:
      axis.set_xscale("log")
    if ylim:
      axis.set_ylim(*ylim)
    axis.set_xlabel("training examples seen")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
  axes[0, 0].set_ylabel(f"{metric} (nats per example)")
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  figure.savefig(output, dpi=120)
  plt.close(figure)


def main(argv):
  del argv
  if not FLAGS.workdirs:
    raise UserError("--workdirs is missing; allowed: a comma-separated list of run directories")
  ylim = None
  if FLAGS.ylim:
    try:
      ylim = tuple(float(v) for v in FLAGS.ylim)
    except ValueError:
      ylim = ()
    if len(ylim) != 2 or not all(math.isfinite(v) for v in ylim):
      raise UserError(f"--ylim={','.join(FLAGS.ylim)} is not allowed; allowed: two finite numbers low,high")
  plot(FLAGS.workdirs, FLAGS.output, FLAGS.metric, FLAGS.labels, FLAGS.reference_csv, FLAGS.panels,
       FLAGS.log_x, ylim)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  experiment_main.run(main)
