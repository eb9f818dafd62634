"""gen_jax: deep generative models (VAE, CVAE, autoencoder, GAN) in JAX and Flax Linen.

`gen_jax.train(family, workdir, **settings)` trains (or resumes) a run from Python, as
`python -m experiments.<family>` does from the command line; `gen_jax.load_run(workdir, step=None)` opens a
trained run (see the README's "From Python").
"""

__version__ = "0.1.0"


def load_run(workdir, step=None):
  """The trained run in `workdir` (`gen_jax.families.load_run`); imported on use, so `import gen_jax` is free."""
  from gen_jax.families import load_run as load
  return load(workdir, step)


def train(family, workdir, **settings):
  """Trains (or resumes) a run of `family` ("vae", "gan", ...) in `workdir` and returns it opened (`load_run`).

  `settings` are the experiment's flags as Python values (`latent_dim=2, hidden_sizes=(256, 128)`). The rest
  are the run's own when `workdir` holds a run of `family` (so `train(family, workdir)` resumes it however it
  was started, from a flagfile say, and `num_epochs=` extends it), else the family's defaults. It is the
  command line's path: the same checks (a UserError of one line, before anything is written), run lock,
  config.json and flags.txt (a flagfile that starts the same run from the command line), exact resume, and
  SIGINT (a notebook's interrupt) saving a checkpoint before it stops.
  """
  from gen_jax import config as config_lib
  from gen_jax.families import get
  from gen_jax.runtime import run as run_lib, workdir as workdir_lib
  family_module = get(family)
  workdir_lib.check_workdir(workdir)
  own = workdir_lib.check_stored_config(workdir, family_module)  # A hand-edited value is the file's fault.
  config = config_lib.from_settings(family_module.Config, settings, family, base=own)
  run_lib.train_and_evaluate(family_module, config, workdir, flags_text=config_lib.as_flags_text(config, workdir))
  return load_run(workdir)
