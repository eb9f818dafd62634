"""Evaluation of trained generative models.

  classifier.py      the project's own classifier per dataset (cached in the data dir), the feature space
                     of the sample-quality metrics and the judge of conditional samples
  sample_quality.py  Fréchet classifier distance (fcd), k-NN precision and recall, with the real-data floor
  likelihood.py      test log-likelihood by the importance-weighted bound, bits per dim, active units
  chunked.py         a function applied in chunks; a metric summed over a split in fixed-size chunks (the last
                     one padded and masked)
  mode_coverage.py   the PacGAN/VEEGAN scoring of the 2-D toy mixtures (modes, high quality, reverse KL)

The submodules are imported by name (`from gen_jax.evaluation import classifier`); this package imports
none of them itself, so using one never pays for loading the others.
"""
