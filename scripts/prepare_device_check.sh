#!/usr/bin/env bash
# Run here, before scripts/device_check.sh goes to a machine with a GPU (which reaches no network): puts in
# .device/ (in .gitignore; the device tool carries it when asked) the wheels of the packages gen_jax needs that the
# GPU image lacks, for its Python 3.12, and Debian's Fashion-MNIST files. About 40 MB; run once.
#
#   scripts/prepare_device_check.sh
#   then, through the device tool: run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device/wheels .device/fashion-mnist
cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion-mnist/
# The GPU image has jax, flax, optax, orbax-checkpoint, absl-py, etils, numpy, matplotlib and pytest(-xdist);
# these are what tensorflow-datasets and the metric writer add, at requirements.lock's versions.
for package in tensorflow-datasets array_record dm-tree immutabledict promise simple-parsing docstring_parser \
               tensorflow-metadata tensorboardX toml termcolor googleapis-common-protos; do
  version=$(grep -i "^${package}==" requirements.lock | cut -d= -f3)
  # A pure-Python package published only as a source archive (promise) is built into a wheel here.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .device/wheels \
    "${package}==${version}" 2>/dev/null ||
    python3 -m pip wheel -q --no-deps -w .device/wheels "${package}==${version}"
done
du -sh .device
