"""The registry of model families, and `load_run`.

A family is one plain module (no base class) with:
  NAME                  its registry name, recorded in every run's config.json;
  Config                a frozen dataclass extending `gen_jax.config.TrainingConfig`; its fields are the
                        experiment's flags (list fields are comma-separated flags);
  HELP                  {field: help text} for the flags the shared help (experiments/main.py) lacks;
  MAY_CHANGE_ON_RESUME  the fields a resumed run may change (when or how long, never what is computed);
  OPERATIONS            the names of the operations its runs offer `load_run` (the keys its
                        `Task.operations(state)` returns: sample, encode, decode, reconstruct, ...);
  validate(config)      raises `UserError` (one line naming the value and what is allowed);
  make_task(config, workdir, mesh) -> `gen_jax.runtime.loop.Task`: the data loaded, the jitted step, the
                        evaluation, the figures and `operations(state)` for `load_run`. It writes nothing,
                        and is handed configs that `validate` accepted (training and `load_run` call it
                        first).
Adding one: its model module in gen_jax/models/, its family module here, one line in FAMILIES, an
`experiments/<name>.py` of three lines and a flagfile (README, "Adding a model family").
"""

import dataclasses
import importlib

from gen_jax import config as config_lib
from gen_jax.errors import UserError
from gen_jax.runtime import run as run_lib, workdir as workdir_lib

# name -> the module that implements it (imported on first use, so one experiment loads only its family).
FAMILIES = {
    "vae": "gen_jax.families.vae",
    "cvae": "gen_jax.families.cvae",
    "autoencoder": "gen_jax.families.autoencoder",
    "gan": "gen_jax.families.gan",
    "gmm": "gen_jax.families.gmm",
}


def register(name, module):
  """Adds a family (a module or any object with the attributes above) under `name`."""
  FAMILIES[name] = module


def get(name):
  """The family registered as `name`."""
  if name not in FAMILIES:
    raise UserError(f"family {name!r} is unknown; allowed: {', '.join(FAMILIES)}")
  family = FAMILIES[name]
  return importlib.import_module(family) if isinstance(family, str) else family


def importable():
  """(name, module) of each registered family, in order, less those whose import raises. Only hints use it
  (which families have a flag, which offer an operation): a family that does not import (a half-edited module,
  a missing optional dependency) must not turn a user's mistake in another family's command into a traceback.
  `get` still raises for the family a command is about."""
  for name in FAMILIES:
    try:
      module = get(name)
    except Exception:  # Any import error; not BaseException, so that Ctrl-C still stops.
      continue
    yield name, module


def families_with(operation):
  """The registered families whose runs offer `operation` (for the one line a run that lacks it gives)."""
  return [name for name, family in importable() if operation in family.OPERATIONS]


def families_with_setting(setting, excluding=None):
  """The registered families whose config has a setting (flag) `setting`, other than `excluding` (for the one
  line an unknown flag gets: the VampPrior's --prior given to the GAN, say)."""
  return [name for name, family in importable() if name != excluding
          and setting in {field.name for field in dataclasses.fields(family.Config)}]


def load_run(workdir, step=None):
  """The `gen_jax.runtime.run.Run` of a workdir at checkpoint `step` (None: the best-validation checkpoint of a run
  that selects on a validation split, such as the density flagfiles' early-stopped runs; else the newest).

  >>> run = load_run("runs/vae")
  >>> images = run.sample(16)                 # (16, 28, 28, 1) in [0, 1]
  >>> run.log_likelihood(run.dataset.test_images[:8], k=100)  # per image, nats (of bits, if the run binarises)
  """
  workdir_lib.check_workdir(workdir)
  stored = workdir_lib.read_config(workdir)
  if stored is None:
    raise UserError(f"--workdir={workdir} holds no config.json; allowed: the workdir of a run (of "
                    f"{', '.join(FAMILIES)})")
  name = stored.get(config_lib.FAMILY_KEY)
  if name is None:
    raise UserError(f"{workdir}/config.json names no family (written before families were recorded); "
                    "allowed: a run written by this version (re-run its command in a fresh --workdir)")
  family = get(name)
  config = workdir_lib.check_stored_config(workdir, family)  # A hand-edited value is the file's fault: it says so.
  return run_lib.open_run(family, config, workdir, step, providers=families_with)
