"""A function applied to an array in chunks: `map_in_chunks`, and metrics over a whole split, in padded chunks
of one compiled shape, with the chunks placed once.

`make_split_evaluator(sums_fn, images, labels, chunk_size, mesh, key)` returns evaluate(params) -> the
mean of every metric over the split. `sums_fn(params, x, labels, mask, key) -> {name: masked sum}` is handed
in by the family (the VAE's ELBO terms, the autoencoder's reconstruction term): this module knows nothing
about models. The key of chunk i is fold_in(key, i), so two evaluations of the same parameters agree.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import parallel
from gen_jax.data import image_data, preprocessing


def map_in_chunks(function, chunk_size, *inputs, traced=False):
  """function(*chunks) over matching chunks of `chunk_size` rows of `inputs` (None passes through as None), the
  outputs concatenated: a numpy array, each chunk's output fetched before the next is computed, so the device
  holds one chunk's output however many rows there are; with `traced` (inside jit or vmap, where nothing can
  come to the host), a jax array."""
  fetch = (lambda output: output) if traced else np.asarray
  outputs = [fetch(function(*(None if x is None else x[start:start + chunk_size] for x in inputs)))
             for start in range(0, len(inputs[0]), chunk_size)]
  return (jnp.concatenate if traced else np.concatenate)(outputs)


def make_split_evaluator(sums_fn, images, labels, chunk_size, mesh, key):
  """evaluate(params) -> {name: mean over the split} from the masked per-chunk sums of `sums_fn`."""
  parallel.check_batch_divisible(chunk_size, mesh, flag="eval_batch_size")  # The runs' chunks are that flag's.
  sharding = parallel.batch_sharded(mesh)
  sums_fn = jax.jit(sums_fn)

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
    sums = [sums_fn(params, preprocessing.to_unit_interval(x), chunk_labels, mask, jax.random.fold_in(key, index))
            for index, (x, chunk_labels, mask) in enumerate(chunks)]
    totals = {}
    for chunk_sums in jax.device_get(sums):
      for name, value in chunk_sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    return {name: value / len(images) for name, value in totals.items()}

  return evaluate
