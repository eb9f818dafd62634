"""The GAN's evaluation: mode coverage and the lecture's figures on the toys, sample grids, latent walks and
sample quality (FCD, precision, recall) on images; samples.npy and the training curves at the end."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gen_jax import files, objectives, plots, salts
from gen_jax.data import image_data
from gen_jax.evaluation import classifier as classifier_lib, mode_coverage, sample_quality as sample_quality_lib
from gen_jax.families import gan_figures
from gen_jax.families.gan_steps import cycled_labels, discriminate, evaluation_generator, generate, make_sampler

# Rows of the latent-walk figure: pairs of end points, one class each for a conditional GAN.
INTERPOLATION_ROWS = 8


class ToyEvaluation:
  """Mode coverage per evaluation, scatter plots or the 1-D frame, samples.npy and the GIF at the end."""

  def __init__(self, networks, config, toy, workdir):
    self.networks, self.config, self.toy, self.workdir = networks, config, toy, workdir
    self.images_dir = os.path.join(workdir, "images")
    self._sampler = make_sampler(networks)
    self.real = np.asarray(toy.sample(salts.key_for(config.seed, salts.TOY_REAL_SAMPLES), config.num_eval_samples))
    self._d_outputs = jax.jit(lambda d_params, d_state, x: discriminate(networks, d_params, d_state, x)[0])
    # D(x) of one point exists only without packing: a packed D judges m points at once.
    self.probability_of_real = config.packing == 1 and objectives.discriminator_probability(
        config.loss, jnp.zeros(1)) is not None

  def _samples(self, state, key_salt, count):
    return self._sampler(evaluation_generator(state, self.config), state.model_state["generator"],
                         salts.key_for(self.config.seed, key_salt), count)

  def sample(self, state, count, seed, labels=None):
    """`count` points drawn with fold_in(key(seed), FINAL_SAMPLES): at the run's seed, samples.npy."""
    image_data.checked_labels(labels, count, None)  # The toys have no classes: refused, never ignored.
    return self._sampler(evaluation_generator(state, self.config), state.model_state["generator"],
                         salts.key_for(seed, salts.FINAL_SAMPLES), count)

  def evaluate(self, state):
    generated = self._samples(state, salts.EVALUATION, self.config.num_eval_samples)
    metrics = mode_coverage.score(generated, self.toy.means, self.toy.std)
    if self.probability_of_real:
      # At the optimum D = p_data / (p_data + p_g) = ½ wherever the data are; report how far it is.
      outputs = self._d_outputs(state.params["discriminator"], state.model_state["discriminator"], self.real)
      probability = objectives.discriminator_probability(self.config.loss, outputs)
      metrics["d_mean_abs_deviation_from_half"] = float(jnp.mean(jnp.abs(probability - 0.5)))
    return metrics

  def on_evaluation(self, state, step):
    generated = self._samples(state, salts.EVALUATION, self.config.num_eval_samples)
    scores = mode_coverage.score(generated, self.toy.means, self.toy.std)
    title = (f"step {step}: {scores['modes']}/{self.toy.num_modes} modes, "
             f"{100 * scores['high_quality']:.1f}% high quality")
    if self.toy.dim == 2:
      low, high = self.toy.support(margin_stds=10.0)
      margin = 0.1 * (high - low)
      gan_figures.save_scatter(os.path.join(self.images_dir, f"scatter_{step:08d}.png"), self.real, generated,
                               title, (low - margin, high + margin))
    else:
      self._density_frame(state, step, generated, title)

  def _density_frame(self, state, step, generated, title):
    low, high = self.toy.support(margin_stds=4.0)
    x = np.linspace(low[0], high[0], 400, dtype=np.float32)[:, None]
    discriminator, label = None, ""
    if self.config.packing == 1:
      outputs = self._d_outputs(state.params["discriminator"], state.model_state["discriminator"], jnp.asarray(x))
      probability = objectives.discriminator_probability(self.config.loss, outputs)
      discriminator = np.asarray(outputs if probability is None else probability)
      label = "critic output" if probability is None else "D(x) (discriminator)"
    gan_figures.save_density_frame(os.path.join(self.images_dir, f"frame_{step:08d}.png"), x[:, 0],
                                   self.toy.density(x), gan_figures.kernel_density(generated, x[:, 0]),
                                   discriminator, title, label)

  def finalize(self, state):
    files.save_npy(os.path.join(self.workdir, "samples.npy"),
                   np.asarray(self._samples(state, salts.FINAL_SAMPLES, self.config.num_samples), np.float32))
    pattern = "frame_*.png" if self.toy.dim == 1 else "scatter_*.png"
    gan_figures.save_gif(os.path.join(self.images_dir, "training.gif"), os.path.join(self.images_dir, pattern))
    _plot_training_curves(self.workdir, self.images_dir, ("modes", "high_quality"))


def _plot_training_curves(workdir, images_dir, test_metrics):
  for metric in ("d_loss", "g_loss") + tuple(test_metrics):
    plots.plot_curves([workdir], os.path.join(images_dir, f"{metric}_curve.png"), metric=metric, labels=["GAN"],
                      log_x=False)


class ImageEvaluation:
  """Sample and interpolation grids per evaluation; sample quality (FCD, precision, recall) and samples.npy.

  Per evaluation `num_eval_samples` samples are scored (0: none); the final evaluation scores
  `num_samples` of them, the same ones written to samples.npy.
  """

  def __init__(self, networks, config, workdir, total_steps, labelled):
    self.networks, self.config, self.workdir, self.total_steps = networks, config, workdir, total_steps
    # The classifier behind the scores is trained on the dataset's labels; unlabelled data get no scores.
    self.scored = config.score_sample_quality and labelled
    if config.score_sample_quality and not labelled:
      logging.warning("--dataset=%s has no labels to train the scoring classifier on; no FCD/precision/recall",
                      config.dataset)
    self.images_dir = os.path.join(workdir, "images")
    self._sampler = make_sampler(networks)
    # Fixed keys: the same draws at every evaluation, so figures and scores show the model changing, not the noise.
    self.grid_key = salts.key_for(config.seed, salts.IMAGE_GRID)
    rows, columns = INTERPOLATION_ROWS, 10
    ends = jax.random.normal(salts.key_for(config.seed, salts.INTERPOLATION), (2, rows, 1, config.latent_dim))
    t = jnp.linspace(0.0, 1.0, columns)[None, :, None]
    # Straight lines between random pairs of latent codes: DCGAN's "walk in latent space".
    self.interpolation_z = ((1.0 - t) * ends[0] + t * ends[1]).reshape(rows * columns, config.latent_dim)
    self.interpolation_columns = columns
    self._generate = jax.jit(
        lambda g_params, g_state, z, labels: generate(networks, g_params, g_state, z, labels)[0])

  def _g(self, state):
    return evaluation_generator(state, self.config), state.model_state["generator"]

  def sample(self, state, count, seed, labels=None):
    """`count` images in [0, 1] drawn with fold_in(key(seed), FINAL_SAMPLES) (default labels: classes in
    turn, or a self-conditioned GAN's clusters in their shares; `gan_steps.default_labels`): at the run's seed
    and `num_samples`, exactly samples.npy. Batch norm normalises each chunk of 500 with its own statistics,
    so labels given here should mix the labels within a chunk, as in training: a chunk of one class has its
    class-dependent mean normalised away."""
    key = salts.key_for(seed, salts.FINAL_SAMPLES)
    labels = image_data.checked_labels(labels, count, self.networks.num_classes)
    labels = None if labels is None else jnp.asarray(labels)
    return from_tanh_range(self._sampler(*self._g(state), key, count, labels))

  def _final_samples(self, state):
    return self.sample(state, self.config.num_samples, self.config.seed)

  def evaluate(self, state):
    if not self.scored:
      return {}
    if int(jax.device_get(state.step)) >= self.total_steps:
      samples = self._final_samples(state)
    elif self.config.num_eval_samples > 0:
      samples = from_tanh_range(self._sampler(*self._g(state), salts.key_for(self.config.seed, salts.EVALUATION),
                                              self.config.num_eval_samples))
    else:
      return {}
    scores = sample_quality(samples, self.config)
    if self.networks.num_classes is not None and self.config.condition_on == "classes":  # Clusters have no
      scores |= self._conditional_accuracy(state)  # classifier to judge them.
    return scores

  def _conditional_accuracy(self, state):
    """The classifier's agreement with the labels samples were drawn for (the CVAE's `conditional_accuracy`).
    The labels cycle through the classes within each sampling chunk, so batch norm sees mixed-class batches
    as in training (a batch of one class would normalise the class away)."""
    num_classes = self.networks.num_classes
    count = self.config.conditional_samples_per_class * num_classes
    intended = np.asarray(cycled_labels(count, num_classes))
    key = salts.key_for(self.config.seed, salts.CONDITIONAL_ACCURACY)
    samples = from_tanh_range(self._sampler(*self._g(state), key, count, jnp.asarray(intended, jnp.int32)))
    classifier = classifier_lib.load_or_train_classifier(self.config.dataset, self.config.data_dir,
                                                         self.config.image_size or None)
    return classifier_lib.conditional_accuracy(classifier.predict(samples), intended, num_classes)

  def on_evaluation(self, state, step):
    g_params, g_state = self._g(state)
    samples = self._sampler(g_params, g_state, self.grid_key, self.config.num_images)
    plots.save_image_grid(os.path.join(self.images_dir, f"samples_{step:08d}.png"), from_tanh_range(samples))
    labels = None
    if self.networks.num_classes is not None:  # One class per row of the walk.
      labels = jnp.repeat(jnp.arange(INTERPOLATION_ROWS) % self.networks.num_classes, self.interpolation_columns)
    walk = self._generate(g_params, g_state, self.interpolation_z, labels)
    plots.save_image_grid(os.path.join(self.images_dir, f"interpolation_{step:08d}.png"),
                          from_tanh_range(np.asarray(walk)), columns=self.interpolation_columns)
    if self.networks.num_classes is not None:  # Rows: one z each; columns: every class (the CVAE's style grid).
      num_classes = self.networks.num_classes
      z = jnp.repeat(self.interpolation_z[::self.interpolation_columns], num_classes, axis=0)
      grid = self._generate(g_params, g_state, z, jnp.tile(jnp.arange(num_classes), len(z) // num_classes))
      plots.save_image_grid(os.path.join(self.images_dir, f"style_grid_{step:08d}.png"),
                            from_tanh_range(np.asarray(grid)), columns=num_classes)

  def finalize(self, state):
    files.save_npy(os.path.join(self.workdir, "samples.npy"), self._final_samples(state))
    _plot_training_curves(self.workdir, self.images_dir, ("fcd",))


def from_tanh_range(images):
  """Generator images in [−1, 1] -> [0, 1], the contract's range for samples.npy."""
  return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def sample_quality(samples01, config):
  """FCD, precision and recall of [0, 1] images against the dataset's real ones, with their provenance.

  The dataset's classifier is loaded from its cache, or trained and cached on first use.
  """
  scores = sample_quality_lib.score_samples(samples01, config.dataset, data_dir=config.data_dir,
                                            image_size=config.image_size or None)
  return {name: value for name, value in scores.items() if value is not None}
