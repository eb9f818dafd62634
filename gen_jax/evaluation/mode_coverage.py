"""The PacGAN/VEEGAN mode-coverage score for samples of a Gaussian mixture (Lin et al. 2018;
Srivastava et al. 2017).

Each sample is assigned to its nearest mode, the distance measured in units of that mode's standard
deviation; a sample within `threshold_stds` (3) of it is "high quality". Then
- `modes`: how many modes received at least one high-quality sample;
- `high_quality`: the fraction of samples that are high quality (perfect samples of a 2-D mixture score
  P(χ²₂ < 9) = 98.9%);
- `reverse_kl`: KL(histogram of the high-quality samples over the modes ‖ uniform over the modes), 0 when
  every mode gets the same share and log(num_modes) when all of them sit in one mode. With no high-quality
  sample at all the histogram does not exist and the value is NaN (written as "nan"), not a made-up number.
"""

import numpy as np

DEFAULT_NUM_SAMPLES = 2500  # The protocol's sample count.


def score(samples, means, std, threshold_stds=3.0):
  """{'modes', 'high_quality', 'reverse_kl'} for `samples` (n, dim) of a mixture with `means` (k, dim).

  `std` is one standard deviation for every mode or an array of k of them. Computed in float64 numpy:
  the point set is small and the values are reported, not differentiated.
  """
  samples = np.asarray(samples, np.float64)
  means = np.asarray(means, np.float64)
  stds = np.broadcast_to(np.asarray(std, np.float64), (len(means),))
  distances = np.sqrt(np.sum((samples[:, None, :] - means[None]) ** 2, axis=-1)) / stds[None]
  nearest = np.argmin(distances, axis=1)
  high_quality = distances[np.arange(len(samples)), nearest] < threshold_stds
  counts = np.bincount(nearest[high_quality], minlength=len(means))
  total = counts.sum()
  if total == 0:
    reverse_kl = float("nan")
  else:
    shares = counts[counts > 0] / total
    reverse_kl = float(np.sum(shares * np.log(shares * len(means))))
  return {"modes": int(np.sum(counts > 0)), "high_quality": float(np.mean(high_quality)),
          "reverse_kl": max(reverse_kl, 0.0) if total else reverse_kl}
