"""The project's classifier of a dataset: trains it once (cached in the data dir) and reports it.

  python -m experiments.classifier --flagfile=experiments/configs/classifier_fashion_mnist.cfg

The sample-quality metrics (fcd, precision, recall) and the CVAE's conditional accuracy load the same
cached classifier; running this first only makes them skip the one-off training.
"""

from absl import flags

from experiments import main as experiment_main
from gen_jax import config as config_lib
from gen_jax.errors import UserError
from gen_jax.evaluation import classifier as classifier_lib

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "fashion_mnist", experiment_main.COMMON_HELP["dataset"])
flags.DEFINE_string("data_dir", None, experiment_main.COMMON_HELP["data_dir"] + " The classifier is cached in its "
                    f"{classifier_lib.CACHE_FOLDER}/.")
flags.DEFINE_integer("image_size", 0, experiment_main.COMMON_HELP["image_size"])
flags.DEFINE_integer("num_train_examples", 0, experiment_main.COMMON_HELP["num_train_examples"])
flags.DEFINE_integer("num_epochs", classifier_lib.DEFAULT_NUM_EPOCHS, "Training epochs.")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the data order.")
flags.DEFINE_string("cache_dir", None, "Folder of classifier folders (default: the data dir's "
                    f"{classifier_lib.CACHE_FOLDER}/).")


def main(argv):
  del argv
  for name, smallest in (("image_size", 0), ("num_train_examples", 0), ("num_epochs", 1), ("seed", 0)):
    if FLAGS[name].value < smallest:
      raise UserError(f"--{name}={FLAGS[name].value} is not allowed; allowed: an integer >= {smallest}")
  if FLAGS.seed > config_lib.MAX_SEED:
    raise UserError(f"--seed={FLAGS.seed} is not allowed; allowed: at most {config_lib.MAX_SEED}")
  settings = dict(image_size=FLAGS.image_size or None, num_train_examples=FLAGS.num_train_examples or None,
                  num_epochs=FLAGS.num_epochs, seed=FLAGS.seed, cache_dir=FLAGS.cache_dir)
  directory = classifier_lib.cache_directory(FLAGS.dataset, FLAGS.data_dir, **settings)
  cached = classifier_lib.is_current(directory)  # Else trained now (also when a stale folder is there).
  classifier = classifier_lib.load_or_train_classifier(FLAGS.dataset, FLAGS.data_dir, **settings)
  info = classifier.info
  print(f"{info['dataset']} classifier: test accuracy {classifier.test_accuracy:.2%} on "
        f"{info['num_test_examples']} test images; trained on {info['num_train_examples']} images for "
        f"{info['num_epochs']} epochs in {info['train_seconds']:.1f} s; "
        f"{'loaded from' if cached else 'saved to'} {classifier.checkpoint_dir}")


if __name__ == "__main__":
  experiment_main.run(main, training=True)  # Its record is the cached classifier, not the console.
