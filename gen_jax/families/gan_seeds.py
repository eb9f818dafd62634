"""Several seeds of a toy GAN trained at once, vmapped over the seed: the inner loop of a recipe search.

A 2-D toy GAN is far too small to fill a CPU, so five seeds vmapped cost little more than two run one
after another, and a recipe is judged over seeds rather than on one lucky draw. Seed s follows the random
streams of `experiments.gan --seed=s` (initial parameters, the key of every step, the evaluation draw), but
vmapped arithmetic may round differently, so its scores match that run's in distribution, not to the bit.
No workdir, checkpoints or figures: only the mode-coverage scores, which is what a search compares.
"""

import jax
import numpy as np

from gen_jax import salts
from gen_jax.data import toys
from gen_jax.errors import UserError
from gen_jax.evaluation import chunked, mode_coverage
from gen_jax.families import gan, gan_steps
from gen_jax.runtime import loop


def _compile(config, toy, total_steps, steps_per_call):
  """(init(seed keys) -> states, advance(states, train keys) -> states, sample(states, keys) -> points)."""
  networks = gan_steps.build_networks(config, (toy.dim,))
  init, update = gan_steps.bind_steps(config, networks, (toy.dim,), total_steps, gan.TOY_STEPS_PER_EPOCH)
  make_batch = gan.toy_batch_fn(toy, config.batch_size, config.d_steps_per_g_step)

  def one_seed(state, train_key):
    step = loop.training_step(make_batch, update, train_key)  # The loop's own: the same keys at each step.
    return jax.lax.scan(lambda state, _: (step(state, None, None)[0], None), state, None, length=steps_per_call)[0]

  def sample(state, key):
    z = jax.random.normal(key, (config.num_eval_samples, config.latent_dim))
    generator = gan_steps.evaluation_generator(state, config)

    def generate(codes):
      return gan_steps.generate(networks, generator, state.model_state["generator"], codes)[0]

    # In the chunks gan_steps.make_sampler draws a run's own samples in: with batch norm in G, each chunk is
    # normalised with its own statistics, so one batch of all samples would score another generator.
    return chunked.map_in_chunks(generate, gan_steps.SAMPLE_CHUNK, z, traced=True)

  return (jax.jit(jax.vmap(init)), jax.jit(jax.vmap(one_seed), donate_argnums=(0,)),
          jax.jit(jax.vmap(sample)))


def train_toy_seeds(config, seeds, on_scores=None):
  """Trains `config` (a toy GAN) once per seed, all at once; returns (states, scores): the final GANStates
  stacked along a leading seed axis, and the final mode-coverage dicts, one per seed.

  Every `eval_every_steps` (and at the end) `on_scores(step, scores)` gets the per-seed mode-coverage dicts.
  """
  gan.validate(config)
  if not toys.is_toy(config.dataset):
    raise UserError(f"--dataset={config.dataset} is not a toy; allowed: {', '.join(toys.TOY_DATASETS)}")
  if not seeds:
    raise UserError("--seeds is empty; allowed: a comma-separated list of integers")
  toy = toys.load_toy(config.dataset)
  every = config.eval_every_steps or gan.TOY_STEPS_PER_EPOCH
  total_steps = config.num_steps or config.num_epochs * gan.TOY_STEPS_PER_EPOCH
  steps_per_call = int(np.gcd(every, total_steps))  # Evaluations fall on call boundaries.
  init, advance, sample = _compile(config, toy, total_steps, steps_per_call)
  keys = jax.vmap(loop.run_keys)(np.asarray(seeds))
  states = init(keys[:, 0])
  eval_keys = jax.vmap(lambda seed: salts.key_for(seed, salts.EVALUATION))(np.asarray(seeds))
  scores = None
  for step in range(steps_per_call, total_steps + 1, steps_per_call):
    states = advance(states, keys[:, 1])
    if step % every == 0 or step == total_steps:
      points = np.asarray(sample(states, eval_keys))
      scores = [mode_coverage.score(seed_points, toy.means, toy.std) for seed_points in points]
      if on_scores is not None:
        on_scores(step, scores)
  return states, scores
