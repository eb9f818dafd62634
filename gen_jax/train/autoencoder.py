"""The autoencoder baseline: the VAE's networks and data path with a deterministic code and no KL.

The lecture motivates the VAE by what a plain autoencoder lacks: its code space has no prior, so points
between two codes (or drawn from N(0, I)) decode to images it never learnt. To make that comparison fair
the autoencoder here differs from the VAE in the objective only. Decisions:

- The model is `vae.build_model` of the same settings and the code is the encoder's mean, z = μ(x): the
  same networks, the same parameter tree (so every tool that restores a VAE restores an autoencoder), and
  the log-variance half of the encoder's last layer simply receives no gradient.
- The loss is −log p(x | z) under the VAE's own decoder likelihood, in nats per example, reported as
  `recon` = log p(x | z) exactly as the VAE reports its `recon` = E_q[log p(x | z)], so both sit on one
  axis. There is no `kl` and no `elbo`: a deterministic code gives no bound on log p(x), and the rows do
  not pretend otherwise.
- Data, batching, evaluation chunks, figures per evaluation, checkpoints and resume all come from the VAE
  family's `make_task` and the shared loop; only the step, the evaluator's sums and the end-of-run outputs
  are replaced.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import objectives, plots
from gen_jax.models.vae import VAE
from gen_jax.train import config as config_lib, loop, parallel, vae


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(vae.NetworkConfig):
  """The VAE's network settings without its KL settings (β, warm-up) or labels."""


def as_vae_config(config):
  """The VAEConfig with the autoencoder's settings: what builds, feeds and checks the shared pieces."""
  return vae.VAEConfig(**dataclasses.asdict(config))


def validate(config):
  vae.validate(as_vae_config(config))


def reconstruct_output(model, params, x):
  """Decoder output for the deterministic code z = μ(x)."""
  code, _ = model.apply({"params": params}, x, method=VAE.encode)
  return model.apply({"params": params}, code, method=VAE.decode)


def reconstruction_log_likelihood(model, params, x, config):
  """log p(x | z = μ(x)) per example in nats, under the decoder likelihood of `config`."""
  output = reconstruct_output(model, params, x)
  return objectives.log_likelihood(config.likelihood, output, x, gaussian_std=config.gaussian_std or None)


def autoencoder_loss(recon):
  """(loss, metrics) from per-example recon = log p(x | z): the mean negative log-likelihood."""
  return -jnp.mean(recon), {"recon": jnp.mean(recon)}


def train_step(state, batch, key, model, config):
  """One optimisation step on −log p(x | μ(x)); pure, jitted by the loop. The code needs no key."""
  del key

  def loss_fn(params):
    return autoencoder_loss(reconstruction_log_likelihood(model, params, batch["x"], config))

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), metrics | {"loss": loss}


def _evaluation_sums(params, x, labels, mask, key, model, config):
  del labels, key
  return {"recon": jnp.sum(reconstruction_log_likelihood(model, params, x, config) * mask)}


class _Outputs:
  """End of run: samples.npy and the recon curve.

  An autoencoder has no sampler. samples.npy holds decodes of z ~ N(0, I), what sampling it as if it were
  a VAE gives, which is the lecture's point about an unregularised code space; they are not samples of a
  model density.
  """

  def __init__(self, model, config, workdir):
    self.config, self.workdir = config, workdir
    self._decode_mean = jax.jit(lambda params, z: objectives.decoder_mean(
        config.likelihood, model.apply({"params": params}, z, method=VAE.decode), config.gaussian_std or None))

  def finalize(self, state):
    params = jax.device_get(state.params)
    key = jax.random.fold_in(jax.random.key(self.config.seed), 0xF1A1)
    z = jax.random.normal(key, (self.config.num_samples, self.config.latent_dim))
    samples = np.concatenate([np.asarray(self._decode_mean(params, z[i:i + 1000]))
                              for i in range(0, len(z), 1000)])
    vae.write_samples(self.workdir, samples)
    plots.plot_curves([self.workdir], os.path.join(self.workdir, "images", "recon_curve.png"), metric="recon",
                      labels=["autoencoder"])


def make_task(config, workdir, mesh):
  """The autoencoder as a loop.Task: the VAE family's task with the step, evaluation and outputs replaced."""
  validate(config)
  vae_config = as_vae_config(config)
  task, schedule, model, data = vae.make_task(vae_config, workdir, mesh)
  evaluate_params = vae.make_evaluator(model, vae_config, data.test_images, None, mesh,
                                       evaluation_sums=_evaluation_sums)
  task = dataclasses.replace(
      task,
      update=functools.partial(train_step, model=model, config=vae_config),
      evaluate=lambda state: evaluate_params(state.params),
      finalize=_Outputs(model, vae_config, workdir).finalize)
  return task, schedule, model, data


def train_and_evaluate(config, workdir):
  """Trains the autoencoder and writes the workdir; returns the final state."""
  mesh = parallel.make_mesh()
  task, schedule, _, _ = make_task(config, workdir, mesh)
  loop.check_resume_config(workdir, config_lib.as_flat_dict(config), config_lib.MAY_CHANGE_ON_RESUME)
  return loop.train(task, schedule, workdir, config.seed, mesh)
