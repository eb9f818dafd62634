"""The VAE family (and the conditional VAE, with labels): config, model, loss, jitted step, evaluation.

`train_and_evaluate(config, workdir)` is the one entry point the experiment calls.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from gen_jax import objectives, plots
from gen_jax.errors import UserError
from gen_jax.evaluation import likelihood as likelihood_lib
from gen_jax.models import hierarchical, networks
from gen_jax.models.vae import VAE
from gen_jax.train import checkpointing, config as config_lib, image_data, loop, metrics as metrics_lib
from gen_jax.train import optim, parallel

# two_layer: two stochastic layers, x-hidden_sizes-latent_dim-top_hidden_sizes-top_latent_dim (IWAE, Table 1).
ARCHITECTURES = ("mlp", "conv", "two_layer")
# elbo: the k-sample average of log w (k = 1: the VAE); iwae: the importance-weighted bound L_k.
OBJECTIVES = ("elbo", "iwae")
# Settings that only change when or how a run is evaluated may also change on resume.
MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME | {"final_iwae_k"}


@dataclasses.dataclass(frozen=True)
class NetworkConfig(config_lib.TrainingConfig):
  """The encoder/decoder settings every latent-code family shares (VAE, CVAE, autoencoder)."""
  architecture: str = "mlp"
  hidden_sizes: Tuple[int, ...] = (512, 256)
  latent_dim: int = 20
  activation: str = "relu"
  likelihood: str = "bernoulli"
  gaussian_std: float = 0.0  # > 0: fixed decoder std; 0: learned per-pixel variance (gaussian only).
  init_std: float = 0.0  # > 0: N(0, init_std²) weights (Kingma & Welling use 0.01); 0: Flax's default.
  num_images: int = 64


@dataclasses.dataclass(frozen=True)
class VAEConfig(NetworkConfig):
  beta: float = 1.0
  kl_warmup_steps: int = 0
  conditional: bool = False  # The conditional VAE: q(z|x,y), p(x|z,y).
  objective: str = "elbo"
  num_importance_samples: int = 1  # k: samples per example for the k-sample ELBO or L_k.
  top_hidden_sizes: Tuple[int, ...] = (100, 100)  # two_layer only: between h1 (latent_dim) and h2.
  top_latent_dim: int = 50  # two_layer only: the dimension of h2, the top (prior) layer.
  final_iwae_k: int = 0  # > 0: the last test row adds log_likelihood = L_k over the test split (papers: 5000).


def validate(config):
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("latent_dim", "num_images", "num_importance_samples"))
  if not config.hidden_sizes or min(config.hidden_sizes) <= 0:
    raise UserError(f"--hidden_sizes={','.join(map(str, config.hidden_sizes))} is not allowed; allowed: a "
                    "comma-separated list of positive sizes")
  config_lib.check_choice(config, "architecture", ARCHITECTURES)
  config_lib.check_choice(config, "activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "likelihood", objectives.LIKELIHOODS)
  config_lib.check_choice(config, "objective", OBJECTIVES)
  if config.final_iwae_k < 0:
    raise UserError(f"--final_iwae_k={config.final_iwae_k} is not allowed; allowed: 0 (none) or a positive k")
  if config.objective == "iwae" and (config.beta != 1.0 or config.kl_warmup_steps):
    raise UserError(f"--beta={config.beta} --kl_warmup_steps={config.kl_warmup_steps} with --objective=iwae is "
                    "not allowed; allowed: --beta=1 --kl_warmup_steps=0 (β weights the ELBO's KL only)")
  if config.architecture == "two_layer":
    if config.conditional:
      raise UserError("--architecture=two_layer with --conditional is not supported; allowed: mlp or conv "
                      "for the conditional VAE")
    if config.top_latent_dim <= 0 or not config.top_hidden_sizes or min(config.top_hidden_sizes) <= 0:
      raise UserError(f"--top_hidden_sizes={','.join(map(str, config.top_hidden_sizes))} "
                      f"--top_latent_dim={config.top_latent_dim} is not allowed; allowed: positive sizes")
  for name in ("beta", "kl_warmup_steps", "gaussian_std", "init_std"):
    if getattr(config, name) < 0:
      raise UserError(f"--{name}={getattr(config, name)} is not allowed; allowed: zero or a positive number")


def build_model(config, image_shape, num_classes=None):
  dtype = jnp.dtype(config.compute_dtype)
  outputs_per_pixel = 2 if config.likelihood == "gaussian" and config.gaussian_std == 0 else 1
  init_std = config.init_std or None
  if config.architecture == "two_layer":
    return hierarchical.build_two_layer_vae(config.hidden_sizes, config.latent_dim, config.top_hidden_sizes,
                                            config.top_latent_dim, image_shape, outputs_per_pixel,
                                            config.activation, init_std, dtype)
  if config.architecture == "mlp":
    encoder = networks.MLPEncoder(config.hidden_sizes, config.latent_dim, config.activation, init_std, dtype)
    decoder = networks.MLPDecoder(tuple(reversed(config.hidden_sizes)), image_shape, outputs_per_pixel,
                                  config.activation, init_std, dtype)
  else:
    if image_shape[0] % 4 or image_shape[1] % 4:
      raise UserError(f"--architecture=conv needs image sides divisible by 4, got {image_shape[:2]}; allowed: "
                      "28, 32, 64 ... (set --image_size)")
    encoder = networks.ConvEncoder(config.latent_dim, activation=config.activation, dtype=dtype)
    decoder = networks.ConvDecoder(image_shape, outputs_per_pixel, activation=config.activation, dtype=dtype)
  return VAE(encoder, decoder, num_classes if config.conditional else None)


def _gaussian_std(config):
  return config.gaussian_std or None


# Draws of h1 used to estimate E_q[h2 | x] = E_{q(h1|x)}[E[h2 | h1]] for the top layer's active units.
TOP_MEAN_SAMPLES = 100


def latent_variable_functions(model, config):
  """(encode, log_weight_terms, posterior_means) of a one- or two-stochastic-layer VAE.

  encode(params, x, labels) runs the image-dependent part of q once per image; log_weight_terms(params,
  encoded, x, labels, key, k) -> (log p(x|z), log p(z), log q(z|x)), each (k, batch), for k samples;
  posterior_means(params, encoded, key) -> E_q[z_l | x] per stochastic layer. Training, the ELBO evaluation
  and the k = 5000 likelihood all use these, so they cannot disagree about the model.
  """
  gaussian_std = _gaussian_std(config)
  variables = lambda params: {"params": params}

  def log_px(decoder_output, x):
    """log p(x | z) for outputs (k, batch, H, W, C'), on event axes flattened to one.

    Why flatten: XLA's CPU backend ran the 5-D broadcast of x (batch, H, W, 1) against the outputs 25 to 170
    times slower than the same maths on (k, batch, H·W·C) rows, and this is the k = 5000 evaluation's inner loop.
    """
    leading = decoder_output.shape[:2]
    if decoder_output.shape[-1] != x.shape[-1]:  # (mean, log-variance) stacked on the channel axis.
      channels = x.shape[-1]
      decoder_output = decoder_output.reshape(*leading, -1, 2, channels)
      decoder_output = jnp.swapaxes(decoder_output, -3, -2)  # All means first, then all log-variances.
    return objectives.log_likelihood(config.likelihood, decoder_output.reshape(*leading, -1),
                                     x.reshape(x.shape[0], -1), batch_ndim=2, gaussian_std=gaussian_std)

  if config.architecture == "two_layer":
    def encode(params, x, labels):
      del labels
      return model.apply(variables(params), x, method="encode_bottom")

    def log_weight_terms(params, encoded, x, labels, key, num_samples):
      del labels
      bottom_key, top_key = jax.random.split(key)
      h1 = objectives.reparameterize(bottom_key, *encoded, num_samples=num_samples)
      output, log_prior, log_posterior = model.apply(variables(params), encoded, h1, top_key,
                                                     method="log_weight_terms")
      return log_px(output, x), log_prior, log_posterior

    def posterior_means(params, encoded, key):
      h1 = objectives.reparameterize(key, *encoded, num_samples=TOP_MEAN_SAMPLES)
      top_mean, _ = model.apply(variables(params), h1, method="encode_top")
      return encoded[0], jnp.mean(top_mean, axis=0)

    return encode, log_weight_terms, posterior_means

  def encode(params, x, labels):
    return model.apply(variables(params), x, labels, method="encode")

  def log_weight_terms(params, encoded, x, labels, key, num_samples):
    mean, log_variance = encoded
    z = objectives.reparameterize(key, mean, log_variance, num_samples=num_samples)
    # (k, batch) rows flattened into one batch: every decoder (the conv one included) takes it as is, and
    # the decoder's matmuls see k·batch rows at once.
    flat_labels = None if labels is None else jnp.broadcast_to(labels, z.shape[:2]).reshape(-1)
    output = model.apply(variables(params), z.reshape(-1, z.shape[-1]), flat_labels, method="decode")
    output = output.reshape(*z.shape[:2], *output.shape[1:])
    return (log_px(output, x), objectives.standard_normal_log_density(z),
            objectives.gaussian_log_density(z, mean, log_variance))

  def posterior_means(params, encoded, key):
    del params, key
    return (encoded[0],)

  return encode, log_weight_terms, posterior_means


def likelihood_model(model, config):
  """The VAE as the importance-sampling evaluator sees it (log w = log p(x, z) − log q(z | x))."""
  encode, log_weight_terms, posterior_means = latent_variable_functions(model, config)

  def log_weights(params, encoded, x, labels, key, num_samples):
    log_px, log_prior, log_posterior = log_weight_terms(params, encoded, x, labels, key, num_samples)
    return log_px + log_prior - log_posterior

  return likelihood_lib.LatentVariableModel(encode, log_weights, posterior_means)


def per_example_terms(model, params, x, key, labels, config, num_samples=1):
  """Per example, from k samples: log w (k, batch), recon = mean_k log p(x|z_i) and kl (batch,).

  kl is KL(q(z|x) ‖ p(z)) in closed form for one stochastic layer; with two it has no closed form and is
  the k-sample Monte-Carlo estimate mean_i [log q(z_i|x) − log p(z_i)], so recon − kl is the k-sample ELBO.
  """
  encode, log_weight_terms, _ = latent_variable_functions(model, config)
  encoded = encode(params, x, labels)
  log_px, log_prior, log_posterior = log_weight_terms(params, encoded, x, labels, key, num_samples)
  if config.architecture == "two_layer":
    kl = jnp.mean(log_posterior - log_prior, axis=0)
  else:
    kl = objectives.kl_to_standard_normal(*encoded)
  return log_px + log_prior - log_posterior, jnp.mean(log_px, axis=0), kl


def per_example_elbo(model, params, x, key, labels, config):
  """(recon, kl) per example for one reparameterised sample each."""
  _, recon, kl = per_example_terms(model, params, x, key, labels, config)
  return recon, kl


def train_step(state, batch, key, model, config):
  """One optimisation step on the negative (β-weighted) k-sample ELBO, or on −L_k; pure, jitted by the loop.

  For `iwae` the gradient is the plain reparameterised gradient of the log-sum-exp (Burda et al., Eq. 14):
  the normalised importance weights arise from differentiating it, none is detached.
  """

  def loss_fn(params):
    log_weights, recon, kl = per_example_terms(model, params, batch["x"], key, batch.get("labels"), config,
                                               config.num_importance_samples)
    if config.objective == "iwae":
      return objectives.iwae_terms(log_weights, recon, kl)
    weight = objectives.kl_weight_schedule(state.step, config.beta, config.kl_warmup_steps)
    return objectives.elbo_terms(recon, kl, weight)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), metrics | {"loss": loss}


def _evaluation_sums(params, x, labels, mask, key, model, config):
  recon, kl = per_example_elbo(model, params, x, key, labels, config)
  return {"elbo": jnp.sum((recon - kl) * mask), "recon": jnp.sum(recon * mask), "kl": jnp.sum(kl * mask)}


def make_evaluator(model, config, images, labels, mesh, evaluation_sums=_evaluation_sums):
  """evaluate(params) -> test elbo/recon/kl means over the whole split, one sample per example.

  The key is fixed, so two evaluations of the same parameters agree exactly. `evaluation_sums(params, x,
  labels, mask, key, model, config) -> {name: masked sum}` picks the metrics (the autoencoder's differ).
  """
  chunk_size = config.eval_batch_size
  parallel.check_batch_divisible(chunk_size, mesh)
  sharding = parallel.batch_sharded(mesh)
  sums_fn = jax.jit(functools.partial(evaluation_sums, model=model, config=config))
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 0xE7A1)

  # The padded chunks go to the devices once, not at every evaluation.
  chunks = []
  for start, stop in image_data.evaluation_chunks(len(images), chunk_size):
    x, mask = image_data.padded_chunk(images, start, stop, chunk_size)
    chunk_labels = None if labels is None else image_data.padded_chunk(labels, start, stop, chunk_size)[0]
    chunks.append((parallel.global_array(x, sharding),
                   None if chunk_labels is None else parallel.global_array(chunk_labels, sharding),
                   parallel.global_array(mask, sharding)))

  def evaluate(params):
    # Every chunk is dispatched before any result is fetched, so the devices never wait on the host.
    sums = [sums_fn(params, image_data.unit_interval(x), chunk_labels, mask, jax.random.fold_in(eval_key, index))
            for index, (x, chunk_labels, mask) in enumerate(chunks)]
    totals = {}
    for chunk_sums in jax.device_get(sums):
      for name, value in chunk_sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    return {name: value / len(images) for name, value in totals.items()}

  return evaluate


def make_likelihood_evaluator(model, config, data, mesh, iwae_k):
  """evaluate(params) -> test log_likelihood (L_k with k = `iwae_k`), bits_per_dim, active units."""
  labels = data.test_labels if config.conditional else None
  num_devices = mesh.devices.size
  images_per_chunk = num_devices * -(-100 // num_devices)
  # Bits per dimension only mean something for discrete data: binarised pixels under a Bernoulli decoder.
  discrete = config.likelihood == "bernoulli" and config.binarization != "none"
  return likelihood_lib.make_log_likelihood_evaluator(
      likelihood_model(model, config), data.test_images, labels, iwae_k, mesh, config.seed,
      images_per_chunk=images_per_chunk, discrete=discrete)


def _total_steps(config, steps_per_epoch):
  return config.num_steps or config.num_epochs * steps_per_epoch


def make_schedule(config, steps_per_epoch):
  return loop.Schedule(
      num_steps=_total_steps(config, steps_per_epoch), steps_per_epoch=steps_per_epoch,
      batch_size=config.batch_size, log_every_steps=config.log_every_steps,
      eval_every_steps=config.eval_every_steps or steps_per_epoch,
      checkpoint_every_steps=config.checkpoint_every_steps or steps_per_epoch,
      keep_checkpoints=config.keep_checkpoints, steps_per_dispatch=config.steps_per_dispatch)


def make_task(config, workdir, mesh):
  """The VAE (a CVAE when `config.conditional`) as a loop.Task, with its schedule and loaded data.

  Families built on the VAE (the conditional VAE's extra metrics, say) wrap the returned task's
  `evaluate`/`finalize` with `dataclasses.replace` instead of copying this function.
  """
  validate(config)
  data = image_data.load_image_data(config)
  if config.conditional and data.train_labels is None:
    raise UserError(f"--conditional needs labels, but --dataset={config.dataset} has none; allowed: a labelled "
                    "dataset (fashion_mnist, mnist, npz with y)")
  model = build_model(config, data.image_shape, data.num_classes)
  step_inputs, steps_per_epoch = loop.epoch_permutation_indices(
      len(data.train_images), config.batch_size, config.seed)
  schedule = make_schedule(config, steps_per_epoch)
  optimizer = optim.make_optimizer(config, schedule.num_steps, steps_per_epoch=steps_per_epoch)
  labelled = config.conditional
  test_labels = data.test_labels if labelled else None

  @jax.jit  # One compiled program: run eagerly, every layer's ops are dispatched (and compiled) one by one.
  def init_state(key):
    x = jnp.zeros((1, *data.image_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if labelled else None
    params = model.init(key, x, jax.random.key(0), labels)["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

  evaluate_params = make_evaluator(model, config, data.test_images, test_labels, mesh)
  final_likelihood = (make_likelihood_evaluator(model, config, data, mesh, config.final_iwae_k)
                      if config.final_iwae_k else None)

  def evaluate(state):
    metrics = evaluate_params(state.params)
    if final_likelihood is not None and int(jax.device_get(state.step)) == schedule.num_steps:
      metrics |= final_likelihood(state.params)  # The last test row also carries the paper's number.
    return metrics

  figures = _Figures(model, config, data, workdir)
  task = loop.Task(
      init_state=init_state,
      update=functools.partial(train_step, model=model, config=config),
      make_batch=image_data.make_batch_fn(config.binarization, with_labels=labelled),
      data=data.device_data(with_labels=labelled),
      step_inputs=step_inputs,
      evaluate=evaluate,
      on_evaluation=figures.on_evaluation,
      finalize=figures.finalize)
  return task, schedule, model, data


def train_and_evaluate(config, workdir):
  """Trains a VAE (a CVAE when `config.conditional`) and writes the workdir; returns the final state."""
  mesh = parallel.make_mesh()
  task, schedule, _, _ = make_task(config, workdir, mesh)
  loop.check_resume_config(workdir, config_lib.as_flat_dict(config), MAY_CHANGE_ON_RESUME)
  return loop.train(task, schedule, workdir, config.seed, mesh)


def config_from_workdir(workdir):
  """The VAEConfig a run recorded in its config.json (fields of other families, e.g. the CVAE's, dropped)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir} has no config.json; allowed: the workdir of a VAE, CVAE or IWAE run")
  with open(path) as f:
    stored = json.load(f)
  names = {field.name for field in dataclasses.fields(VAEConfig)}
  return VAEConfig(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in stored.items() if key in names})


def evaluate_checkpoint(workdir, iwae_k=likelihood_lib.DEFAULT_IWAE_K):
  """L_k test log-likelihood of a run's latest checkpoint, appended to its metrics.jsonl; returns the row.

  The row has the checkpoint's step and examples seen; `wall_time` is the run's training time at that
  checkpoint plus this evaluation's. The same k on the same checkpoint is recorded once.
  """
  if iwae_k <= 0:
    raise UserError(f"--iwae_k={iwae_k} is not allowed; allowed: a positive number of importance samples")
  start = time.time()
  config = config_from_workdir(workdir)
  mesh = parallel.make_mesh()
  task, _, model, data = make_task(config, workdir, mesh)
  replicated = parallel.replicated(mesh)
  abstract_state = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
                                jax.eval_shape(task.init_state, jax.random.key(0)))
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  restored = checkpointer.restore_latest(abstract_state)
  checkpointer.close()
  if restored is None:
    raise UserError(f"--workdir={workdir} has no checkpoint yet; allowed: a run that has saved one")
  state, progress = restored
  metrics = make_likelihood_evaluator(model, config, data, mesh, iwae_k)(state.params)
  row = {"step": int(progress["step"]), "examples_seen": int(progress["examples_seen"]), "split": "test",
         "wall_time": round(float(progress["wall_time"]) + time.time() - start, 3)} | metrics
  writer = metrics_lib.MetricWriter(workdir, enabled=parallel.is_main_process())
  writer.write(row)
  writer.close()
  return row


def prior_dim(config):
  """The dimension of the latent that p(z) = N(0, I) is on: the top layer's for two stochastic layers."""
  return config.top_latent_dim if config.architecture == "two_layer" else config.latent_dim


class _Figures:
  """Reconstruction and sample grids per evaluation; samples.npy and the ELBO curve at the end."""

  def __init__(self, model, config, data, workdir):
    self.model, self.config, self.workdir = model, config, workdir
    self.images_dir = os.path.join(workdir, "images")
    count = min(config.num_images // 2, len(data.test_images))
    self.test_x = image_data.unit_interval(data.test_images[:count])
    self.test_labels = None if not config.conditional else jnp.asarray(data.test_labels[:count])
    self.num_classes = data.num_classes
    key = jax.random.fold_in(jax.random.key(config.seed), 0x5A3)
    # The same prior draws at every evaluation, so the sample grids show the model changing, not the noise.
    self.grid_z = jax.random.normal(key, (config.num_images, prior_dim(config)))
    self._decode_mean = jax.jit(self._decode_mean_impl)
    self._reconstruct = jax.jit(self._reconstruct_impl)

  def _labels_for(self, count):
    if not self.config.conditional:
      return None
    return jnp.arange(count) % self.num_classes

  def _decode_mean_impl(self, params, z, labels):
    output = self.model.apply({"params": params}, z, labels, method="decode")
    return objectives.decoder_mean(self.config.likelihood, output, _gaussian_std(self.config))

  def _reconstruct_impl(self, params, x, labels):
    mean, _ = self.model.apply({"params": params}, x, labels, method="encode")
    return self._decode_mean_impl(params, mean, labels)

  def on_evaluation(self, state, step):
    params = jax.device_get(state.params)
    reconstructions = self._reconstruct(params, self.test_x, self.test_labels)
    pairs = np.stack([np.asarray(self.test_x), np.asarray(reconstructions)], axis=1)
    pairs = pairs.reshape(-1, *pairs.shape[2:])  # Rows alternate: original, reconstruction.
    plots.save_image_grid(os.path.join(self.images_dir, f"reconstructions_{step:08d}.png"), pairs, columns=8)
    samples = self._decode_mean(params, self.grid_z, self._labels_for(len(self.grid_z)))
    plots.save_image_grid(os.path.join(self.images_dir, f"samples_{step:08d}.png"), samples, columns=8)

  def finalize(self, state):
    params = jax.device_get(state.params)
    key = jax.random.fold_in(jax.random.key(self.config.seed), 0xF1A1)
    z = jax.random.normal(key, (self.config.num_samples, prior_dim(self.config)))
    samples = np.concatenate([
        np.asarray(self._decode_mean(params, z[i:i + 1000], self._labels_for(len(z[i:i + 1000]))))
        for i in range(0, len(z), 1000)])
    write_samples(self.workdir, samples)
    plots.plot_curves([self.workdir], os.path.join(self.images_dir, "elbo_curve.png"), metric="elbo",
                      labels=["VAE"])


def write_samples(workdir, samples):
  """samples.npy, written atomically (a kill mid-write never leaves a torn file)."""
  temporary = os.path.join(workdir, "samples.tmp.npy")
  np.save(temporary, np.asarray(samples, np.float32))
  os.replace(temporary, os.path.join(workdir, "samples.npy"))
