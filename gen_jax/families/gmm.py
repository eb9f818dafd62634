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
import os

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import config as config_lib, files, plots, salts
from gen_jax.data import image_data, preprocessing
from gen_jax.evaluation import chunked as chunked_lib, likelihood as likelihood_lib
from gen_jax.models import mixture as gmm
from gen_jax.runtime import loop

NAME = "gmm"
OPERATIONS = ("sample", "log_likelihood", "test_log_likelihood")
MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME
# What EM leaves unread: it has no optimizer, and every iteration sees the whole training split in float32.
UNREAD_BY_EM = ("optimizer", "learning_rate", "lr_schedule", "lr_decay_every_steps", "lr_decay_factor", "adam_b1",
                "adam_b2", "adam_eps", "momentum", "weight_decay", "grad_clip_norm", "compute_dtype", "batch_size",
                "eval_batch_size")

HELP = {
    **{name: config_lib.not_read_help("EM has no optimizer, and each iteration fits the whole training split in "
                                      "float32") for name in UNREAD_BY_EM},
    "num_components": "Mixture components K.",
    "likelihood": "bernoulli (binarised data) or gaussian (continuous data), diagonal per component.",
    "pseudo_count": "Strength, in examples, of the conjugate priors that keep EM finite (MAP-EM).",
    "num_epochs": "EM iterations (each one pass over the training split).",
    "log_every_steps": "EM iterations between train rows.",
    "eval_every_steps": "EM iterations between test evaluations.",
}

# Data rows per E-step chunk: (rows × K) responsibilities stay tens of megabytes even for K = 1000.
ROWS_PER_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class Config(config_lib.TrainingConfig):
  num_components: int = 100
  likelihood: str = "bernoulli"
  pseudo_count: float = 1.0  # Prior strength in examples (see gen_jax/models/mixture.py).
  num_epochs: int = 50  # EM iterations.
  log_every_steps: int = 1
  eval_every_steps: int = 10


GMMConfig = Config


def validate(config):
  # First: the shared checks would otherwise refuse a momentum as the optimizer's, pointing at another one.
  config_lib.check_not_read(config, UNREAD_BY_EM, "the GMM's EM fit")
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("num_components", "pseudo_count"))
  config_lib.check_choice(config, "likelihood", tuple(gmm.LIKELIHOODS))


def _chunked(images, chunk_rows):
  """(num_chunks, chunk_rows, D) float32 in [0, 1] and the (num_chunks, chunk_rows) mask of real rows."""
  rows = images.reshape(len(images), -1)
  chunks, masks = zip(*(image_data.padded_chunk(rows, start, stop, chunk_rows)
                        for start, stop in image_data.evaluation_chunks(len(rows), chunk_rows)))
  return np.stack(chunks).astype(np.float32) / 255.0, np.stack(masks)


def make_task(config, workdir, mesh):
  """The mixture as a loop.Task with its schedule and data."""
  data = image_data.load_image_data(config)
  train_images = data.train_images
  if config.binarization == "dynamic":
    train_images = preprocessing.binarize_static(config.seed, train_images)
  chunk_rows = min(ROWS_PER_CHUNK, len(train_images))
  chunks, weights = _chunked(train_images, chunk_rows)
  schedule = loop.Schedule.from_config(config, steps_per_epoch=1, examples_per_step=len(train_images))
  test_chunks, test_weights = _chunked(data.test_images, min(ROWS_PER_CHUNK, len(data.test_images)))
  discrete = likelihood_lib.is_discrete(config.likelihood, config.binarization)
  num_dims = int(np.prod(data.image_shape))

  def init_state(key):
    x = jnp.asarray(train_images.reshape(len(train_images), -1), jnp.float32) / 255.0
    return gmm.initialize(key, x, config.num_components, config.likelihood)

  log_likelihood_fn = jax.jit(lambda state, x: gmm.log_likelihood(state, x, config.likelihood))
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

  def operations(state):
    # A mixture has no classes: labels= is refused, never ignored.
    def log_likelihood(x, k, labels, seed):
      del k, seed  # Exact: a finite mixture needs no importance sampling.
      image_data.checked_labels(labels, len(x), None)
      x = image_data.as_unit_images(x).reshape(len(x), -1)
      return chunked_lib.map_in_chunks(lambda chunk: log_likelihood_fn(state, chunk), ROWS_PER_CHUNK, x)

    def sample(count, seed, labels):
      image_data.checked_labels(labels, count, None)
      return sample_means(state, count, seed, data.image_shape)

    return {"sample": sample, "log_likelihood": log_likelihood, "test_log_likelihood": lambda k: evaluate(state)}

  def finalize(state):
    files.save_npy(os.path.join(workdir, "samples.npy"),
                   sample_means(state, config.num_samples, config.seed, data.image_shape))

  return loop.Task(
      init_state=init_state, update=update,
      make_batch=lambda data, step_input, key: data,
      data={"chunks": chunks, "weights": weights},
      step_inputs=lambda first_step, count: np.zeros((count,), np.int32),
      evaluate=evaluate, schedule=schedule,
      on_evaluation=lambda state, step: _save_means(state, step, workdir, data.image_shape),
      finalize=finalize, operations=operations, dataset=data, headline="log_likelihood")


def _save_means(state, step, workdir, image_shape):
  """The 64 heaviest components' means, as images: what each mixture component has become."""
  order = np.argsort(-np.asarray(state.log_mixing))[:64]
  means = np.asarray(state.means)[order].reshape(-1, *image_shape)
  plots.save_image_grid(os.path.join(workdir, "images", f"component_means_{step:08d}.png"), means)


def sample_means(state, count, seed, image_shape):
  """The means of `count` components drawn from π with fold_in(key(seed), FINAL_SAMPLES) (the mixture's
  analogue of a decoder mean; at the run's seed and `num_samples`, samples.npy)."""
  key = salts.key_for(seed, salts.FINAL_SAMPLES)
  components = jax.random.categorical(key, state.log_mixing, shape=(count,))
  return np.asarray(state.means)[np.asarray(components)].reshape(-1, *image_shape).astype(np.float32)
