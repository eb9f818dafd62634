"""Named salts of the random streams: every draw is `key_for(seed, SALT)` = fold_in(key(seed), SALT), never a
bare literal.

A salt names what a stream is for, so two places that must draw the same numbers (the GAN evaluator and
the vmapped toy-seed sweep, say) share one name, and two streams that must differ cannot collide by a
copied literal. The values are those the project has always used: changing one changes every number that
depends on that stream (the README's figures were measured with these).
"""

import jax

DATA_ORDER = 0x5EED  # Epoch e's permutation is drawn from fold_in(fold_in(key(seed), DATA_ORDER), e).
EVALUATION = 0xE7A1  # The fixed draws of every test evaluation (ELBO samples, GAN samples scored).
LIKELIHOOD = 0x10C1  # The importance samples of the k-sample test log-likelihood.
FINAL_SAMPLES = 0xF1A1  # samples.npy and `Run.sample` at the run's own seed.
IMAGE_GRID = 0x5A3  # The z's of the sample grid drawn at every evaluation.
INTERPOLATION = 0x1A7  # The end points of the GAN's latent walk.
TOY_REAL_SAMPLES = 0xDA7A  # The real points a toy GAN's discriminator is shown in the 1-D figure.
CONDITIONAL_ACCURACY = 0xC1A5  # The z's the CVAE decodes (and the conditional GAN draws) for conditional accuracy.
VALIDATION = 0x7A1D  # The fixed draws of every validation evaluation (ELBO samples on the held-out split).


def key_for(seed, salt):
  """The key of the stream `salt` (one of the names above) at `seed`: fold_in(key(seed), salt)."""
  return jax.random.fold_in(jax.random.key(seed), salt)
