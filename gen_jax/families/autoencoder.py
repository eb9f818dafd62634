"""The autoencoder baseline: the VAE's networks and data path with a deterministic code and no KL.

The lecture motivates the VAE by what a plain autoencoder lacks: its code space has no prior, so points
between two codes (or drawn from N(0, I)) decode to images it never learnt. To make that comparison fair
the autoencoder here differs from the VAE in the objective only. Decisions:

- The model is the latent-code families' model of the same settings and the code is the encoder's mean,
  z = μ(x): the same networks, the same parameter tree, and the log-variance half of the encoder's last
  layer simply receives no gradient.
- The loss is −log p(x | z) under the VAE's own decoder likelihood, in nats per example, reported as
  `recon` = log p(x | z) exactly as the VAE reports its `recon` = E_q[log p(x | z)], so both sit on one
  axis. There is no `kl` and no `elbo`: a deterministic code gives no bound on log p(x), and the rows do
  not pretend otherwise; `load_run` offers no log_likelihood either.
- An autoencoder has no sampler. samples.npy (and `sample`) hold decodes of z ~ N(0, I), what sampling it as
  if it were a VAE gives, which is the lecture's point about an unregularised code space; they are not
  samples of a model density.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gen_jax import config as config_lib, objectives
from gen_jax.errors import UserError
from gen_jax.families import latent_code

NAME = "autoencoder"
OPERATIONS = ("sample", "encode", "decode", "reconstruct")
MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME
ARCHITECTURES = ("mlp", "conv")
HELP = latent_code.HELP | {
    "architecture": "mlp or conv (convolutional encoder/decoder).",
    "likelihood": "bernoulli, gaussian or continuous_bernoulli decoder (the loss is -log p(x|z)).",
}


@dataclasses.dataclass(frozen=True)
class Config(latent_code.NetworkConfig):
  """The latent-code families' network settings; no KL settings (β, warm-up), no labels."""


AutoencoderConfig = Config


def validate(config):
  latent_code.validate_network(config)
  if config.architecture not in ARCHITECTURES:  # Two stochastic layers make no deterministic code.
    raise UserError(f"--architecture={config.architecture} is not an autoencoder's; allowed: "
                    f"{', '.join(ARCHITECTURES)}")


def reconstruct_output(model, params, x):
  """Decoder output for the deterministic code z = μ(x)."""
  code, _ = model.apply({"params": params}, x, method="encode")
  return model.apply({"params": params}, code, method="decode")


def reconstruction_log_likelihood(model, params, x, config):
  """log p(x | z = μ(x)) per example in nats, under the decoder likelihood of `config`."""
  output = reconstruct_output(model, params, x)
  return objectives.log_likelihood(config.likelihood, output, x, gaussian_std=latent_code.gaussian_std(config))


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


def evaluation_sums(params, x, labels, mask, key, model, config):
  del labels, key
  return {"recon": jnp.sum(reconstruction_log_likelihood(model, params, x, config) * mask)}


def make_task(config, workdir, mesh):
  """The autoencoder as a loop.Task."""
  parts = latent_code.build(config, mesh)
  evaluate_recon = parts.split_evaluator(evaluation_sums)
  return parts.task(workdir, update=functools.partial(train_step, model=parts.model, config=config),
                    evaluate=lambda state: evaluate_recon(state.params), validation_sums=evaluation_sums,
                    operations=parts.codes.operations,
                    headline="recon", curve_label="autoencoder")
