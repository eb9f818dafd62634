"""The Gaussian / Bernoulli mixture baseline trained by EM through the shared loop.

One loop step is one EM iteration over the whole training split (`--num_epochs` = EM iterations, one
epoch each), so the baseline gets checkpoints, resume and the workdir contract like every family. Train
rows carry the training log-likelihood of the parameters that iteration started from (EM's E-step is where
it is computed) and `objective` (plus the log prior), which never decreases; test rows carry
`log_likelihood` in nats per example, and `bits_per_dim` for binarised data, comparable with the VAE's.

Decisions: EM needs a fixed data set, so with `--binarization=dynamic` the training images are binarised
once (by the run's seed); the test split is binarised with the same fixed draw the VAE runs use. Batch
size, optimiser and learning-rate flags do not apply.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import plots
from gen_jax.data import preprocessing
from gen_jax.evaluation import gmm, likelihood as likelihood_lib
from gen_jax.train import config as config_lib, image_data, loop, parallel
from gen_jax.train.vae import write_samples

# Data rows per E-step chunk: (rows × K) responsibilities stay tens of megabytes even for K = 1000.
ROWS_PER_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class GMMConfig(config_lib.TrainingConfig):
  num_components: int = 100
  likelihood: str = "bernoulli"
  pseudo_count: float = 1.0  # Prior strength in examples (see gen_jax/evaluation/gmm.py).
  num_epochs: int = 50  # EM iterations.
  log_every_steps: int = 1
  eval_every_steps: int = 10


def validate(config):
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("num_components", "pseudo_count"))
  config_lib.check_choice(config, "likelihood", gmm.LIKELIHOODS)


def _chunked(images, chunk_rows):
  """(num_chunks, chunk_rows, D) float32 in [0, 1] and the (num_chunks, chunk_rows) mask of real rows."""
  x = images.reshape(len(images), -1).astype(np.float32) / 255.0
  num_chunks = -(-len(x) // chunk_rows)
  padded = np.zeros((num_chunks * chunk_rows, x.shape[1]), np.float32)
  padded[:len(x)] = x
  weights = np.zeros(num_chunks * chunk_rows, np.float32)
  weights[:len(x)] = 1.0
  return padded.reshape(num_chunks, chunk_rows, -1), weights.reshape(num_chunks, chunk_rows)


def make_task(config, workdir, mesh):
  """The mixture as a loop.Task with its schedule and data."""
  validate(config)
  data = image_data.load_image_data(config)
  train_images = data.train_images
  if config.binarization == "dynamic":
    train_images = preprocessing.binarize_static(config.seed, train_images)
  chunk_rows = min(ROWS_PER_CHUNK, len(train_images))
  chunks, weights = _chunked(train_images, chunk_rows)
  schedule = loop.Schedule(
      num_steps=config.num_steps or config.num_epochs, steps_per_epoch=1, batch_size=len(train_images),
      log_every_steps=config.log_every_steps, eval_every_steps=config.eval_every_steps,
      checkpoint_every_steps=config.checkpoint_every_steps or config.eval_every_steps,
      keep_checkpoints=config.keep_checkpoints, steps_per_dispatch=config.steps_per_dispatch)
  test_chunks, test_weights = _chunked(data.test_images, min(ROWS_PER_CHUNK, len(data.test_images)))
  discrete = config.likelihood == "bernoulli" and config.binarization != "none"
  num_dims = int(np.prod(data.image_shape))

  def init_state(key):
    x = jnp.asarray(train_images.reshape(len(train_images), -1), jnp.float32) / 255.0
    return gmm.initialize(key, x, config.num_components, config.likelihood)

  test_log_likelihood = jax.jit(lambda state, x, w: jnp.sum(gmm.log_likelihood(state, x, config.likelihood) * w))

  def evaluate(state):
    total = sum(float(test_log_likelihood(state, x, w)) for x, w in zip(test_chunks, test_weights))
    result = {"log_likelihood": total / len(data.test_images)}
    if discrete:
      result["bits_per_dim"] = likelihood_lib.bits_per_dim(result["log_likelihood"], num_dims)
    return result

  def update(state, batch, key):
    del key  # EM is deterministic.
    state, metrics = gmm.em_step(state, batch["chunks"], batch["weights"], config.pseudo_count,
                                 config.likelihood)
    return state, metrics | {"loss": -metrics["objective"]}

  figures = functools.partial(_write_figures, config=config, workdir=workdir, image_shape=data.image_shape)
  task = loop.Task(
      init_state=init_state, update=update,
      make_batch=lambda data, step_input, key: data,
      data={"chunks": chunks, "weights": weights},
      step_inputs=lambda first_step, count: np.zeros((count,), np.int32),
      evaluate=evaluate,
      on_evaluation=lambda state, step: _save_means(state, step, workdir, data.image_shape),
      finalize=figures)
  return task, schedule, data


def _save_means(state, step, workdir, image_shape):
  """The 64 heaviest components' means, as images: what each mixture component has become."""
  order = np.argsort(-np.asarray(state.log_mixing))[:64]
  means = np.asarray(state.means)[order].reshape(-1, *image_shape)
  plots.save_image_grid(os.path.join(workdir, "images", f"component_means_{step:08d}.png"), means)


def _write_figures(state, config, workdir, image_shape):
  """samples.npy: the means of components drawn from π (the mixture's analogue of a decoder mean)."""
  key = jax.random.fold_in(jax.random.key(config.seed), 0xF1A1)
  components = jax.random.categorical(key, state.log_mixing, shape=(config.num_samples,))
  write_samples(workdir, np.asarray(state.means)[np.asarray(components)].reshape(-1, *image_shape))


def train_and_evaluate(config, workdir):
  """Fits the mixture by EM and writes the workdir; returns the final state."""
  mesh = parallel.make_mesh()
  task, schedule, _ = make_task(config, workdir, mesh)
  loop.check_resume_config(workdir, config_lib.as_flat_dict(config), config_lib.MAY_CHANGE_ON_RESUME)
  return loop.train(task, schedule, workdir, config.seed, mesh)
