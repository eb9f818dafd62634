"""The VAE family (Kingma & Welling 2014; with `--objective=iwae` Burda et al. 2016): the ELBO, the
k-sample bounds, the jitted step, the test ELBO and the k-sample test log-likelihood.

The networks, data, figures and samples are the latent-code parts every such family shares
(`latent_code.py`); this module holds what makes it a VAE: q(z|x), the prior p(z) (`PRIORS`, the modules of
`models.priors`) and their bounds.
"""

import dataclasses
import functools
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

from gen_jax import config as config_lib, objectives
from gen_jax.data import image_data
from gen_jax.errors import UserError
from gen_jax.evaluation import likelihood as likelihood_lib
from gen_jax.families import latent_code
from gen_jax.models import priors

NAME = "vae"
OPERATIONS = ("sample", "encode", "decode", "reconstruct", "log_likelihood", "test_log_likelihood")
# Settings that only change when or how a run is evaluated may also change on resume.
MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME | {"final_iwae_k"}
HELP = latent_code.HELP | {
    "conditional": "Must stay false here (experiments.cvae trains the conditional VAE).",
    "objective": "elbo (k-sample average ELBO; k=1 is the VAE) or iwae (importance-weighted bound L_k).",
    "num_importance_samples": "k: samples of z per example in the training objective.",
    "beta": "Weight of the KL term in the training loss (the reported ELBO is always the true bound).",
    "kl_warmup_steps": "Steps of linear KL warm-up from 0 to beta (0: none).",
    "kl_warmup_epochs": "Epochs of KL warm-up: epoch e (from 1) weighs the KL by beta*min(1, e/N) (0: none).",
    "num_pseudo_inputs": "vampprior: K, the number of pseudo-inputs (mixture components).",
    "pseudo_input_init_mean": "vampprior: mean of the pseudo-inputs' initial N(mean, std^2) draw.",
    "pseudo_input_init_std": "vampprior: std of the pseudo-inputs' initial draw.",
    "final_iwae_k": "k of the test log-likelihood (L_k over the test split) in the last test row (0: none).",
    "monte_carlo_kl": "Estimate the ELBO's KL from the drawn z (mean over the k samples of log q(z|x) - log p(z)), "
                      "as the Exemplar-VAE and VampPrior code does, also where it has a closed form (N(0, I) on "
                      "one stochastic layer); priors and architectures without one always do. Under "
                      "--objective=iwae it changes only the reported kl and elbo, not the loss.",
}
# Draws of h1 used to estimate E_q[h2 | x] = E_{q(h1|x)}[E[h2 | h1]] for the top layer's active units.
TOP_MEAN_SAMPLES = 100


@dataclasses.dataclass(frozen=True)
class Config(latent_code.NetworkConfig):
  beta: float = 1.0
  kl_warmup_steps: int = 0
  conditional: bool = False  # The conditional VAE: q(z|x,y), p(x|z,y).
  objective: str = "elbo"
  num_importance_samples: int = 1  # k: samples per example for the k-sample ELBO or L_k.
  final_iwae_k: int = 0  # > 0: the last test row adds log_likelihood = L_k over the test split (papers: 5000).
  kl_warmup_epochs: int = 0  # > 0: epoch e (from 1) weighs the KL by β·min(1, e / kl_warmup_epochs).
  prior: str = "standard_normal"  # A key of PRIORS.
  num_pseudo_inputs: int = 500  # The VampPrior's K.
  # The VampPrior paper's N(0.05, 0.01²); experiments/configs/density_*vampprior*.cfg use the Exemplar-VAE
  # code's effective N(0, 2/K) (see the README's density table).
  pseudo_input_init_mean: float = 0.05
  pseudo_input_init_std: float = 0.01
  # The KL to N(0, I) is exact in closed form; log q − log p at the drawn z estimates it with variance. True takes
  # the estimate, which is what the reference code trains and validates on.
  monte_carlo_kl: bool = False

  def prior_module(self, image_shape):
    return PRIORS[self.prior].build(self, image_shape)

  def networks_take_labels(self):
    return self.conditional

  def kl_warmup_end_step(self, steps_per_epoch):
    return max(self.kl_warmup_epochs * steps_per_epoch, self.kl_warmup_steps)


VAEConfig = Config  # The name from before the registry (every family's is `Config`), kept for code that uses it.


def _closed_form_kl(encoded, log_prior, log_posterior):
  del log_prior, log_posterior
  return objectives.kl_to_standard_normal(*encoded[:2])


def _monte_carlo_kl(encoded, log_prior, log_posterior):
  """The k-sample estimate mean_i [log q(z_i|x) − log p(z_i)] (no closed form: a mixture prior, two layers)."""
  del encoded
  return jnp.mean(log_posterior - log_prior, axis=0)


@dataclasses.dataclass(frozen=True)
class Prior:
  """One choice of --prior.

  `description`: its --prior help. build(config, image_shape) -> its module (`models.priors`). kl(encoded,
  log p(z), log q(z|x)) -> the one-stochastic-layer KL(q(z|x) ‖ p(z)) per example (two layers always take the
  Monte-Carlo estimate). `settings`: the Config fields only this prior reads (refused under another prior
  unless at their defaults). The `architectures` it can sit on, whether the conditional VAE may have it, and
  the `limits` that say why not where it may not.
  """
  description: str
  build: Callable[..., Any]
  kl: Callable[..., Any]
  settings: Tuple[str, ...] = ()
  architectures: Tuple[str, ...] = tuple(latent_code.ARCHITECTURES)
  conditional: bool = True
  limits: str = ""


def _vampprior(config, image_shape):
  return priors.vampprior(config.num_pseudo_inputs, image_shape, config.pseudo_input_init_mean,
                          config.pseudo_input_init_std)


PRIORS = {
    "standard_normal": Prior("N(0, I); closed-form KL unless --monte_carlo_kl",
                             build=lambda config, image_shape: priors.StandardNormal(), kl=_closed_form_kl),
    "vampprior": Prior("(1/K) sum_k q(z|u_k) over K learned pseudo-inputs u_k (Tomczak & Welling 2018); "
                       "Monte-Carlo KL", build=_vampprior, kl=_monte_carlo_kl,
                       settings=("num_pseudo_inputs", "pseudo_input_init_mean", "pseudo_input_init_std"),
                       architectures=("mlp", "conv", "hvae", "conv_hvae"), conditional=False,
                       limits="a prior on q(z|u) needs an encoder of images alone to the prior's layer"),
}
HELP = HELP | {"prior": "; ".join(f"{name}: {prior.description}" for name, prior in PRIORS.items()) + "."}


def _settings_unread_by(prior):
  """The other priors' settings, which mean nothing under `prior` (refused unless at their defaults)."""
  return tuple(setting for other in PRIORS.values() if other is not prior for setting in other.settings
               if setting not in prior.settings)


def validate(config):
  validate_model(config)
  if config.conditional:  # One family per model: the CVAE's own checks its labels and scores its classes.
    raise UserError("--conditional=true is not allowed in experiments.vae; allowed: --conditional=false (use "
                    "experiments.cvae for the conditional VAE, with its label checks and conditional_accuracy)")


def validate_model(config):
  """The settings' checks that the VAE and the CVAE share."""
  latent_code.validate_network(config)
  config_lib.check_positive(config, ("num_importance_samples",))
  config_lib.check_choice(config, "objective", tuple(objectives.TRAINING_OBJECTIVES))
  config_lib.check_choice(config, "prior", tuple(PRIORS))
  config_lib.check_non_negative(config, ("final_iwae_k", "beta", "kl_warmup_steps", "kl_warmup_epochs"))
  if config.objective == "iwae" and (config.beta != 1.0 or config.kl_warmup_steps or config.kl_warmup_epochs):
    raise UserError(f"--beta={config.beta} --kl_warmup_steps={config.kl_warmup_steps} --kl_warmup_epochs="
                    f"{config.kl_warmup_epochs} with --objective=iwae is not allowed; allowed: --beta=1 and no "
                    "warm-up (β weights the ELBO's KL only)")
  if config.kl_warmup_steps and config.kl_warmup_epochs:
    raise UserError(f"--kl_warmup_steps={config.kl_warmup_steps} with --kl_warmup_epochs={config.kl_warmup_epochs}"
                    " is not allowed; allowed: one of them")
  config_lib.check_positive(config, ("num_pseudo_inputs",))
  config_lib.check_non_negative(config, ("pseudo_input_init_std",))
  prior = PRIORS[config.prior]
  config_lib.check_not_read(config, _settings_unread_by(prior), f"--prior={config.prior}", " with this prior")
  if config.architecture not in prior.architectures or (config.conditional and not prior.conditional):
    raise UserError(f"--prior={config.prior} with --architecture={config.architecture}"
                    f"{' --conditional' if config.conditional else ''} is not supported; allowed: the "
                    f"{'' if prior.conditional else 'unconditional '}VAE with --architecture="
                    f"{', '.join(prior.architectures)}{f' ({prior.limits})' if prior.limits else ''}")


def _log_px(config, decoder_output, x):
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
                                   x.reshape(x.shape[0], -1), batch_ndim=2,
                                   gaussian_std=latent_code.gaussian_std(config))


def _two_layer_functions(model, config):
  def encode(params, x, labels):
    del labels
    return model.apply({"params": params}, x, method="encode_bottom")

  def log_weight_terms(params, encoded, x, labels, key, num_samples):
    del labels
    bottom_key, top_key = jax.random.split(key)
    h1 = objectives.reparameterize(bottom_key, *encoded, num_samples=num_samples)
    output, log_prior, log_posterior = model.apply({"params": params}, encoded, h1, top_key,
                                                   method="log_weight_terms")
    return _log_px(config, output, x), log_prior, log_posterior

  def posterior_means(params, encoded, key):
    h1 = objectives.reparameterize(key, *encoded, num_samples=TOP_MEAN_SAMPLES)
    top_mean, _ = model.apply({"params": params}, h1, method="encode_top")
    return encoded[0], jnp.mean(top_mean, axis=0)

  return encode, log_weight_terms, posterior_means, _monte_carlo_kl  # No closed form with two layers.


def _hvae_functions(model, config):
  def encode(params, x, labels):
    del labels
    variables = {"params": params}
    return (*model.apply(variables, x, method="encode_image"), model.apply(variables, method="prior_statistics"))

  def log_weight_terms(params, encoded, x, labels, key, num_samples):
    del labels
    output, log_prior, log_posterior = model.apply({"params": params}, encoded, key, num_samples,
                                                   method="log_weight_terms")
    return _log_px(config, output, x), log_prior, log_posterior

  def posterior_means(params, encoded, key):
    top_stats, features, _ = encoded
    z2 = objectives.reparameterize(key, *top_stats, num_samples=TOP_MEAN_SAMPLES)
    bottom_mean, _ = model.apply({"params": params}, features, z2, method="bottom_posterior")
    return jnp.mean(bottom_mean, axis=0), top_stats[0]  # E_q[z1 | x] (over z2 ~ q(z2|x)), E_q[z2 | x].

  return encode, log_weight_terms, posterior_means, _monte_carlo_kl


def _one_layer_functions(model, config):
  def encode(params, x, labels):
    variables = {"params": params}
    # The prior's statistics (the VampPrior's q(z|u_k); None for N(0, I)) depend on the parameters only:
    # computed once here, not once per chunk of samples.
    return (*model.apply(variables, x, labels, method="encode"), model.apply(variables, method="prior_statistics"))

  def log_weight_terms(params, encoded, x, labels, key, num_samples):
    mean, log_variance, prior_statistics = encoded
    z = objectives.reparameterize(key, mean, log_variance, num_samples=num_samples)
    # (k, batch) rows flattened into one batch: every decoder (the conv one included) takes it as is, and
    # the decoder's matmuls see k·batch rows at once.
    flat_labels = None if labels is None else jnp.broadcast_to(labels, z.shape[:2]).reshape(-1)
    output = model.apply({"params": params}, z.reshape(-1, z.shape[-1]), flat_labels, method="decode")
    output = output.reshape(*z.shape[:2], *output.shape[1:])
    return (_log_px(config, output, x), model.apply({"params": params}, z, prior_statistics, method="log_prior"),
            objectives.gaussian_log_density(z, mean, log_variance))

  def posterior_means(params, encoded, key):
    del params, key
    return (encoded[0],)

  kl = _monte_carlo_kl if config.monte_carlo_kl else PRIORS[config.prior].kl
  return encode, log_weight_terms, posterior_means, kl


# Stochastic layers of each architecture -> its (encode, log_weight_terms, posterior_means, kl) builder.
_LATENT_FUNCTIONS = {"mlp": _one_layer_functions, "conv": _one_layer_functions, "two_layer": _two_layer_functions,
                     "hvae": _hvae_functions, "conv_hvae": _hvae_functions}


def latent_variable_functions(model, config):
  """(encode, log_weight_terms, posterior_means, kl) of a one- or two-stochastic-layer VAE.

  encode(params, x, labels) runs the image-dependent part of q once per image; log_weight_terms(params,
  encoded, x, labels, key, k) -> (log p(x|z), log p(z), log q(z|x)), each (k, batch), for k samples;
  posterior_means(params, encoded, key) -> E_q[z_l | x] per stochastic layer; kl(encoded, log p(z),
  log q(z|x)) -> KL(q(z|x) ‖ p(z)) per example (closed form for N(0, I) on one layer unless
  `config.monte_carlo_kl`, else the Monte-Carlo estimate). Training, the ELBO evaluation and
  the k = 5000 likelihood all use these, so they cannot disagree about the model.
  """
  return _LATENT_FUNCTIONS[config.architecture](model, config)


def likelihood_model(model, config):
  """The VAE as the importance-sampling evaluator sees it (log w = log p(x, z) − log q(z | x))."""
  encode, log_weight_terms, posterior_means, _ = latent_variable_functions(model, config)

  def log_weights(params, encoded, x, labels, key, num_samples):
    log_px, log_prior, log_posterior = log_weight_terms(params, encoded, x, labels, key, num_samples)
    return log_px + log_prior - log_posterior

  return likelihood_lib.LatentVariableModel(encode, log_weights, posterior_means)


def per_example_terms(model, params, x, key, labels, config, num_samples=1):
  """Per example, from k samples: log w (k, batch), recon = mean_k log p(x|z_i) and kl (batch,).

  recon − kl is the k-sample ELBO (for two layers kl is its k-sample Monte-Carlo estimate).
  """
  encode, log_weight_terms, _, kl = latent_variable_functions(model, config)
  encoded = encode(params, x, labels)
  log_px, log_prior, log_posterior = log_weight_terms(params, encoded, x, labels, key, num_samples)
  return log_px + log_prior - log_posterior, jnp.mean(log_px, axis=0), kl(encoded, log_prior, log_posterior)


def per_example_elbo(model, params, x, key, labels, config):
  """(recon, kl) per example for one reparameterised sample each."""
  _, recon, kl = per_example_terms(model, params, x, key, labels, config)
  return recon, kl


def train_step(state, batch, key, model, config, steps_per_epoch=1):
  """One optimisation step on the objective `config.objective` names; pure, jitted by the loop.

  For `iwae` the gradient is the plain reparameterised gradient of the log-sum-exp (Burda et al., Eq. 14):
  the normalised importance weights arise from differentiating it, none is detached.
  """
  objective = objectives.TRAINING_OBJECTIVES[config.objective]

  def loss_fn(params):
    log_weights, recon, kl = per_example_terms(model, params, batch["x"], key, batch.get("labels"), config,
                                               config.num_importance_samples)
    weight = objectives.kl_weight_schedule(state.step, config.beta, config.kl_warmup_steps, config.kl_warmup_epochs,
                                           steps_per_epoch)
    return objective(log_weights, recon, kl, weight)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), metrics | {"loss": loss}


def evaluation_sums(params, x, labels, mask, key, model, config):
  recon, kl = per_example_elbo(model, params, x, key, labels, config)
  return {"elbo": jnp.sum((recon - kl) * mask), "recon": jnp.sum(recon * mask), "kl": jnp.sum(kl * mask)}


def likelihood_operations(parts, mesh):
  """`test_log_likelihood(params, k)` and `log_likelihood(params, x, k, labels, seed)` of a latent-variable
  model; the evaluators are built (and compiled) once per k, however often they are called."""
  config, data = parts.config, parts.data
  model = likelihood_model(parts.model, config)
  num_devices = mesh.devices.size
  images_per_chunk = num_devices * -(-100 // num_devices)
  discrete = likelihood_lib.is_discrete(config.likelihood, config.binarization)

  test_evaluator = functools.lru_cache(lambda k: likelihood_lib.make_log_likelihood_evaluator(
      model, data.test_images, parts.test_labels, k, mesh, config.seed, images_per_chunk=images_per_chunk,
      discrete=discrete))
  per_example = functools.lru_cache(lambda k: likelihood_lib.make_per_example_log_likelihood(
      model, k, images_per_chunk=images_per_chunk))

  def test_log_likelihood(params, k):
    return test_evaluator(k)(params)

  def log_likelihood(params, x, k, labels, seed):
    labels = parts.codes.labels_of_images(labels, len(x))
    return per_example(k)(params, image_data.as_unit_images(x), labels, seed)

  return test_log_likelihood, log_likelihood


def make_task(config, workdir, mesh):
  """The VAE (a CVAE when `config.conditional`) as a loop.Task."""
  parts = latent_code.build(config, mesh)
  return assemble(parts, workdir, mesh)


def assemble(parts, workdir, mesh, extra_evaluation=None):
  """The task from the parts; `extra_evaluation(params) -> metrics` adds to every test row (the CVAE's)."""
  config = parts.config
  evaluate_elbo = parts.split_evaluator(evaluation_sums)
  test_log_likelihood, log_likelihood = likelihood_operations(parts, mesh)

  def evaluate(state):
    metrics = evaluate_elbo(state.params)
    if extra_evaluation is not None:
      metrics |= extra_evaluation(jax.device_get(state.params))
    return metrics

  def final_evaluate(state):  # The last test row carries the paper's number.
    return test_log_likelihood(state.params, config.final_iwae_k) if config.final_iwae_k else {}

  def operations(state):
    params = state.params
    return parts.codes.operations(state) | {
        "log_likelihood": lambda x, k, labels, seed: log_likelihood(params, x, k, labels, seed),
        "test_log_likelihood": lambda k: test_log_likelihood(params, k)}

  update = functools.partial(train_step, model=parts.model, config=config,
                             steps_per_epoch=parts.schedule.steps_per_epoch)
  return parts.task(workdir, update=update, evaluate=evaluate, validation_sums=evaluation_sums,
                    final_evaluate=final_evaluate, operations=operations, headline="elbo",
                    curve_label="CVAE" if config.conditional else "VAE", identity_keys=("iwae_k",),
                    final_row_identity={"iwae_k": config.final_iwae_k} if config.final_iwae_k else {})
