# Sourced by demo.sh and test.sh: makes .venv with the pinned packages and gen_jax installed (editable),
# and makes sure Debian's Fashion-MNIST files are present. Each part is skipped when already done.
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's dataset-fashion-mnist ..."
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null
  else
    echo "Fashion-MNIST files are missing from $FASHION_MNIST_DIR; install them with:" >&2
    echo "  sudo apt-get install -y dataset-fashion-mnist" >&2
    exit 1
  fi
fi
STAMP=.venv/.installed-$(cat setup.cfg requirements.lock | sha1sum | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  echo "setting up .venv (first run only) ..."
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # pip's own chatter goes to a log, shown only if the install fails.
  # The venv's own pip installs the pinned wheels (upgrading it first cost 5 s of every fresh setup). pip
  # byte-compiles them as it installs: with PYTHONDONTWRITEBYTECODE set (as on the CI machine), nothing else
  # would, and every process of the suite would compile jax, flax and orbax from source (measured: the suite
  # took 6 min 16 s with --no-compile against 5 min 15 s without).
  if ! .venv/bin/python -m pip install -q -c requirements.lock -e '.[test]' > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "installing the packages failed (log above, also in .venv/pip.log)" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$STAMP"
fi
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}
