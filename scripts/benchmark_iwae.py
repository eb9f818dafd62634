"""Speed of the k = 5000 test log-likelihood on the IWAE paper's one-layer architecture (784-200-200-50, tanh).

The work is dominated by the decoder's matmuls on k·batch rows, so the figure of merit is the fraction of
the machine's matmul rate (the roofline) that the whole evaluation reaches, counting decoder FLOPs only.

  .venv/bin/python scripts/benchmark_iwae.py [--iwae_k=5000] [--num_images=100]

`scripts/benchmark.py` imports `iwae_evaluation_benchmark(matmul_gflops)` and passes the matmul rate it
measured itself; run standalone, this script measures that rate first.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gen_jax.errors import OneLineArgumentParser, UserError, exit_on_user_error  # noqa: E402
from gen_jax.evaluation import likelihood  # noqa: E402
from gen_jax.families import latent_code, vae  # noqa: E402
from gen_jax.runtime import run  # noqa: E402

# The IWAE paper's one-stochastic-layer model (Burda et al. 2016, Sec. 5).
IWAE_ONE_LAYER = dict(architecture="mlp", hidden_sizes=(200, 200), latent_dim=50, activation="tanh",
                      likelihood="bernoulli", binarization="dynamic")
IMAGE_SHAPE = (28, 28, 1)


def decoder_flops_per_sample(latent_dim, hidden_sizes, num_pixels):
  """Multiply-adds ×2 of the decoder's dense layers for one latent sample (biases and activations aside)."""
  sizes = (latent_dim, *reversed(hidden_sizes), num_pixels)
  return 2 * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def iwae_evaluation_benchmark(matmul_gflops: float, iwae_k: int = 5000, num_images: int = 100,
                              repeats: int = 3) -> dict:
  """Images/s of the k = `iwae_k` likelihood evaluation and its fraction of the decoder-FLOP roofline.

  Parameters are a fresh initialisation and the images random binary ones: the cost does not depend on
  either. The best of `repeats` timed runs after a compiling one is reported.
  """
  config = vae.Config(**IWAE_ONE_LAYER)
  model = latent_code.build_model(config, IMAGE_SHAPE)
  params = model.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)), jax.random.key(1))["params"]
  mesh = run.prepared_mesh()  # As a run's evaluation: on the CPU, malloc keeps freed memory.
  images = (np.random.default_rng(0).random((num_images, *IMAGE_SHAPE)) < 0.3).astype(np.uint8) * 255
  # The evaluator a run's test_log_likelihood uses, with the VAE family's chunk of 100 images per device set.
  images_per_chunk = mesh.devices.size * -(-100 // mesh.devices.size)
  evaluate = likelihood.make_log_likelihood_evaluator(vae.likelihood_model(model, config), images, None, iwae_k,
                                                      mesh, config.seed, images_per_chunk=images_per_chunk)
  evaluate(params)  # Compiles.
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    evaluate(params)
    best = min(best, time.perf_counter() - start)
  images_per_sec = num_images / best
  flops_per_image = iwae_k * decoder_flops_per_sample(config.latent_dim, config.hidden_sizes,
                                                      int(np.prod(IMAGE_SHAPE)))
  achieved_gflops = images_per_sec * flops_per_image / 1e9
  return {"iwae_k": iwae_k, "images_per_sec": images_per_sec, "decoder_gflop_per_image": flops_per_image / 1e9,
          "achieved_gflops": achieved_gflops, "matmul_gflops": matmul_gflops,
          "roofline_fraction": achieved_gflops / matmul_gflops, "device": jax.devices()[0].device_kind}


def main(args):
  for name in ("iwae_k", "num_images"):
    if getattr(args, name) <= 0:
      raise UserError(f"--{name}={getattr(args, name)} is not allowed; allowed: a positive integer")
  from benchmark import matmul_rates  # The roofline as scripts/benchmark.py measures it.
  matmul_gflops = matmul_rates(2048)[0] / 1e9
  print(f"matmul roofline: {matmul_gflops:.0f} GFLOP/s (fp32, 2048^3, {jax.devices()[0].device_kind})")
  result = iwae_evaluation_benchmark(matmul_gflops, args.iwae_k, args.num_images)
  print(f"IWAE k={result['iwae_k']} evaluation, 784-200-200-50: {result['images_per_sec']:.1f} images/s, "
        f"{result['decoder_gflop_per_image']:.2f} decoder GFLOP/image, {result['achieved_gflops']:.0f} GFLOP/s "
        f"= {100 * result['roofline_fraction']:.0f}% of the matmul roofline")


if __name__ == "__main__":
  parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iwae_k", type=int, default=5000, help="importance samples per image (k of L_k)")
  parser.add_argument("--num_images", type=int, default=100, help="images scored per timed evaluation")
  exit_on_user_error(main, parser.parse_args())
