"""The one main every experiment runs: flags from the family's config, validate, prepare the workdir, train.

  python -m experiments.<family> --flagfile=experiments/configs/X.cfg --workdir=DIR [--flag=value ...]

`experiments/<family>.py` is three lines: `main.run_family("<family>")`. Flags are generated from the
family's config dataclass so that a flag and the setting it controls share one name and one default; help
texts come from the family's HELP and, for the shared settings, from COMMON_HELP here. The order is fixed for
every family: parse and validate every flag, build the task (the data loaded), and only then take the
workdir's lock and write into it, so a refused flag never touches an existing workdir. The library never
reads flags.
"""

import dataclasses
import gc
import os
import sys
import typing

from absl import app, flags, logging

from gen_jax import config as config_lib, errors, families, progress
from gen_jax.errors import UserError
from gen_jax.runtime import run as run_lib, workdir as workdir_lib

FLAGS = flags.FLAGS

COMMON_HELP = {
    "seed": "Seed of every random draw (initialisation, data order, sampling).",
    "dataset": "fashion_mnist (offline), mnist, npz:PATH, images:DIR or a TFDS catalog name.",
    "data_dir": "TFDS data directory (default: TFDS's, ~/tensorflow_datasets).",
    "num_train_examples": "Use only the first N training examples (0: all).",
    "num_test_examples": "Use only the first N test examples (0: all).",
    "image_size": "Resize images to this side (0: the dataset's own size).",
    "binarization": "none, dynamic (fresh Bernoulli draw per batch) or static (one fixed draw).",
    "held_out_binarization": "The one fixed draw of a binarised run's validation and test bits: own_seeds (one "
                             "seed per split) or vampprior_code (the VampPrior and Exemplar VAE code's: "
                             "np.random.seed(777), validation then test), for the very images its numbers are on.",
    "batch_size": "Global batch size, split over all devices.",
    "num_epochs": "Training epochs (passes over the training split).",
    "num_steps": "Training steps; > 0 overrides --num_epochs.",
    "optimizer": "adam, adam_norm_grad (Adam on per-parameter normalised gradients), adagrad or sgd.",
    "learning_rate": "Peak learning rate (the schedule's largest).",
    "lr_schedule": "constant, step (x lr_decay_factor every lr_decay_every_steps) or cosine (to 0 at the last step, "
                   "which fixes the run's length: a resume keeps it).",
    "lr_decay_every_steps": "Training steps between two decays of --lr_schedule=step (read by that schedule only).",
    "lr_decay_factor": "What --lr_schedule=step multiplies the learning rate by every --lr_decay_every_steps (0.1: "
                       "ten times smaller; read by that schedule only).",
    "adam_b1": "Adam's beta1: decay rate of its running mean of gradients (its momentum), in [0, 1); 0: no "
               "momentum. Read by adam and adam_norm_grad.",
    "adam_b2": "Adam's beta2: decay rate of its running mean of squared gradients, in [0, 1); 0: the latest "
               "gradient's alone. Read by adam and adam_norm_grad.",
    "adam_eps": "Adam's epsilon, added to the root of its mean squared gradient before dividing by it: bounds the "
                "step where gradients are tiny (the IWAE paper: 1e-4). Read by adam and adam_norm_grad.",
    "momentum": "Momentum of --optimizer=sgd (heavy ball), in [0, 1); 0: plain SGD. Read by sgd only.",
    "weight_decay": "L2 weight decay: this times each parameter is added to its gradient before the optimizer's "
                    "update (adam_norm_grad: after the normalisation); 0: none.",
    "grad_clip_norm": "Largest global L2 norm of the gradient: a larger one is scaled down to it before the "
                      "optimizer's update; 0: no clipping.",
    "compute_dtype": "float32, or bfloat16 for mixed precision (float32 parameters and loss).",
    "log_every_steps": "Steps between train rows in metrics.jsonl.",
    "eval_every_steps": "Steps between test evaluations (0: every epoch).",
    "checkpoint_every_steps": "Steps between checkpoints (0: every epoch).",
    "keep_checkpoints": "How many of the latest checkpoints to keep.",
    "steps_per_dispatch": "Training steps fused into one jitted dispatch with lax.scan.",
    "eval_batch_size": "Test examples per evaluation chunk.",
    "num_samples": "Number of samples written to samples.npy at the end.",
    "profile_steps": "Training steps to trace with jax.profiler (0: none), into <workdir>/tensorboard/plugins/"
                     "profile/: TensorBoard's profile tab, or its perfetto_trace.json.gz in ui.perfetto.dev. "
                     "Whole dispatches are traced, so --steps_per_dispatch=1 makes the window exact.",
    "profile_start_step": "The step the --profile_steps trace starts at (0: the first, whose dispatch also "
                          "compiles: start later for the steady state).",
}


TRAINING_WORKDIR_HELP = ("Directory for everything the run writes (created if needed); re-running the same "
                         "command in it resumes the run from its latest checkpoint.")


def define_run_flags(workdir_help=TRAINING_WORKDIR_HELP):
  """--workdir and the multi-host flags, for the experiments and the scripts that work on one run (a script
  that works on none does not accept them). `workdir_help`: what --workdir is to this command."""
  if "workdir" in FLAGS:
    return
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host runs.")
  flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-host run.")
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")


def define_config_flags(config_class, help_texts, flag_values=FLAGS):
  """One flag per field of `config_class`, with its default and type."""
  hints = typing.get_type_hints(config_class)
  for field in dataclasses.fields(config_class):
    name, default, hint = field.name, field.default, hints[field.name]
    text = help_texts.get(name) or COMMON_HELP.get(name) or name.replace("_", " ")
    if hint is bool:
      flags.DEFINE_bool(name, default, text, flag_values=flag_values)
    elif hint is int:
      flags.DEFINE_integer(name, default, text, flag_values=flag_values)
    elif hint is float:
      flags.DEFINE_float(name, default, text, flag_values=flag_values)
    elif typing.get_origin(hint) is tuple:
      flags.DEFINE_list(name, [str(v) for v in default], text + " (comma-separated)", flag_values=flag_values)
    else:
      flags.DEFINE_string(name, default, text, flag_values=flag_values)


# The elements of a list setting, in words.
_LIST_ELEMENTS = {int: "integers", float: "numbers"}


def config_from_flags(config_class, flag_values=FLAGS):
  """The frozen config from the parsed flags; list flags become tuples of their element type."""
  hints = typing.get_type_hints(config_class)
  values = {}
  for field in dataclasses.fields(config_class):
    value = flag_values[field.name].value
    hint = hints[field.name]
    if typing.get_origin(hint) is tuple:
      element = typing.get_args(hint)[0]
      try:
        value = tuple(element(v) for v in value)
      except ValueError:
        raise UserError(f"--{field.name}={','.join(value)} is not allowed; allowed: a comma-separated list "
                        f"of {_LIST_ELEMENTS.get(element, element.__name__)}") from None
    values[field.name] = value
  return config_class(**values)


def initialize_distributed():
  """Starts JAX's distributed runtime for multi-host runs.

  Explicit flags win; otherwise a SLURM job with several tasks, or a multi-host Cloud TPU, is detected by
  JAX itself. A single process needs nothing.
  """
  if "coordinator_address" not in FLAGS:  # A script that works on no run.
    return
  import jax
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise UserError("--coordinator_address needs --num_processes and --process_id; allowed: all three")
    if not FLAGS.num_processes >= 1:
      raise UserError(f"--num_processes={FLAGS.num_processes} is not allowed; allowed: 1 or more")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise UserError(f"--process_id={FLAGS.process_id} is not allowed; allowed: 0 to {FLAGS.num_processes - 1}")
    # Cross-process collectives on the CPU backend go through gloo (GPU and TPU use their own); asking
    # which backend is in use would initialise it too early, and the setting is harmless elsewhere.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.num_processes is not None or FLAGS.process_id is not None:
    raise UserError("--num_processes and --process_id need --coordinator_address; allowed: all three, or none")
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    jax.distributed.initialize()


def _flagfile_name(argument):
  """The file a --flagfile argument or flagfile line names, as absl reads it; None for any other argument."""
  for prefix in ("--flagfile=", "-flagfile="):
    if argument.startswith(prefix):
      return os.path.expanduser(argument[len(prefix):].strip())
  return None


def _arguments_with_origins(argv):
  """argv[1:] as absl expands it, each argument with where it was written: None on the command line, else
  "FILE line N". absl's own expansion keeps no such record, so this one mirrors it (blank and comment lines
  skipped, a nested --flagfile read in place, a file already being read skipped); it is read only to say
  where a refused argument came from."""
  arguments = []

  def read(path, reading):
    if not path or path in reading:
      return
    try:
      with open(path) as f:
        lines = f.readlines()
    except (OSError, UnicodeDecodeError):  # absl's own reading has said, or will say, what is wrong.
      return
    for number, line in enumerate(lines, 1):
      if line.isspace() or line.startswith(("#", "//")):
        continue
      if _flagfile_name(line) is not None:
        read(_flagfile_name(line), reading + [path])
      else:
        arguments.append((line.strip(), f"{path} line {number}"))

  rest = iter(argv[1:])
  for argument in rest:
    if argument in ("--flagfile", "-flagfile"):
      read(os.path.expanduser(next(rest, "")), [])
    elif _flagfile_name(argument) is not None:
      read(_flagfile_name(argument), [])
    else:
      arguments.append((argument, None))
  return arguments


def _where(origin):
  return f" (in {origin})" if origin else ""


def _allowed_values(flag):
  """What a flag's parser accepts, in words, for the line a value it cannot parse gets."""
  parser = flag.parser
  if flag.boolean:
    return f"true or false (--{flag.name} alone is true, --no{flag.name} false)"
  if isinstance(parser, flags.EnumParser):
    return ", ".join(parser.enum_values)
  if isinstance(parser, (flags.IntegerParser, flags.FloatParser)):
    return parser.syntactic_help  # "an integer", "a non-negative integer", "a number", ...
  return None


def _refused_value(arguments, flag_values):
  """The first argument, in absl's order, whose value its flag's parser refuses, as the one line it gets; None
  if there is none (the error was about something else)."""
  for index, (argument, origin) in enumerate(arguments):
    if argument == "--":
      break
    if not argument.startswith("-"):
      continue
    name, equals, value = argument[2 if argument.startswith("--") else 1:].partition("=")
    if name in flag_values:
      flag = flag_values[name]
      allowed = _allowed_values(flag) or "a value"
      if not equals:
        if flag.boolean:
          continue
        if index + 1 == len(arguments):  # `--flag value` with the value left off.
          return f"--{name}{_where(origin)} has no value; allowed: --{name}=<{allowed}>"
        value = arguments[index + 1][0]
      try:
        flag.parser.parse(value)
      except (TypeError, ValueError):
        return f"--{name}={value}{_where(origin)} is not allowed; allowed: {allowed}"
    elif equals and name.startswith("no") and name[2:] in flag_values and flag_values[name[2:]].boolean:
      return (f"--{name}={value}{_where(origin)} is not allowed (--{name} takes no value); allowed: --{name}, or "
              f"--{name[2:]}=true or false")
  return None


def _unknown_flag_message(error, arguments, family_name):
  """absl's unknown flag, named where it was written, or for a flag that another family has (the VampPrior's
  --prior given to the GAN, say), which families have it."""
  flag = error.flagname
  origin = next((origin for argument, origin in arguments if argument == error.flagvalue), None)
  owners = families.families_with_setting(flag, family_name) if family_name else []
  if owners:
    return (f"--{flag}{_where(origin)} is not a setting of the {family_name} family; allowed: its own flags "
            f"(--help); --{flag} belongs to {', '.join(f'experiments.{owner}' for owner in owners)}")
  suggestion = str(error).splitlines()[0].partition(". Did you mean: ")[2].rstrip(" ?")
  return (f"--{flag}{_where(origin)} is not a flag of this command; allowed: the flags --help lists"
          + (f" (did you mean --{suggestion}?)" if suggestion else ""))


def parse_command_line(argv, family_name=None, flag_values=FLAGS):
  """Parses `argv` into `flag_values`; a user's mistake (an unknown flag, a value of the wrong type, a stray
  argument, an unreadable flagfile) raises UserError with one line naming it and, for a flagfile's line, the
  file and line. Returns argv[:1]."""
  try:
    rest = flag_values(argv)
  except UnicodeDecodeError as error:  # absl reads flagfiles as UTF-8 text.
    named = ", ".join(_flagfile_name(arg) for arg in argv if _flagfile_name(arg) is not None)
    raise UserError(f"a --flagfile{f' ({named})' if named else ''} is not UTF-8 text ({error.reason} at byte "
                    f"{error.start}); allowed: text files of --flag=value lines") from None
  except flags.UnrecognizedFlagError as error:
    raise UserError(_unknown_flag_message(error, _arguments_with_origins(argv), family_name)) from None
  except (flags.Error, ValueError) as error:
    # absl raises a plain ValueError for `--noflag=value`, and words a wrong-type value as Python's conversion
    # does (`invalid literal for int()`): the argument is found again and said in the project's words.
    message = _refused_value(_arguments_with_origins(argv), flag_values)
    raise UserError(message or str(error).splitlines()[0].replace("ERROR:: ", "")) from None
  if len(rest) > 1:
    # A flagfile line without its dashes (`latent_dim=4`) ends here too: absl takes it for a positional argument.
    arguments = iter(_arguments_with_origins(argv))
    stray = []
    for argument in rest[1:]:
      origin = next((origin for written, origin in arguments if written == argument), None)
      stray.append(f"{argument!r}{_where(origin)}")
    raise UserError(f"unexpected arguments {', '.join(stray)}; allowed: --flag=value pairs only, on the command "
                    "line and in a flagfile")
  return rest


def _help_flag(absl_flag, full):
  """absl's help flag `absl_flag` (a class) as this project's: --help lists the command's own flags and --helpfull
  every flag, and either ends with exit status 0 (asking for help is no failure; absl's exit with 1)."""

  class HelpFlag(absl_flag):
    def __init__(self):
      super().__init__()
      self.allow_override = True  # It replaces absl's flag of the same name.

    def parse(self, argument):
      if self.parser.parse(argument):
        app.usage(shorthelp=not full, writeto_stdout=True)
        if not full:
          print("\nTry --helpfull for every flag, JAX's and the libraries' too.")
        sys.exit(0)

  return HelpFlag()


def _define_help_flags():
  """The help flags, and the command's own flags as those that --help lists: absl lists only the flags that
  the main module itself defines, and an experiment's (`experiments/<family>.py`) are defined here, in
  experiments.main. A setting the family never reads (`config.NOT_READ_HELP`) is left to --helpfull."""
  app.define_help_flags()
  if getattr(FLAGS["help"], "allow_override", False):  # Defined already (a second run() in one process).
    return
  for absl_flag, full in ((app.HelpFlag, False), (app.HelpshortFlag, False), (app.HelpfullFlag, True)):
    flags.DEFINE_flag(_help_flag(absl_flag, full))
  help_flags = {"help", "helpshort", "helpfull"}
  for flag in FLAGS.get_flags_for_module(__name__):
    if flag.name not in help_flags and not flag.help.startswith(config_lib.NOT_READ_HELP):
      FLAGS.register_key_flag_for_module(sys.argv[0], flag)  # absl's name for the main module.


def run(main, family_name=None, training=False):
  """app.run(main), turning a user's mistake into one line on stderr and a non-zero exit. `training`: a
  training command, whose record is its workdir, so that a console gone away does not stop it (a script whose
  product is what it prints keeps failing loudly)."""
  from gen_jax.runtime.loop import Preempted

  def guarded_main(argv):  # argv: the program's name alone (parse_command_line refuses anything else).
    if not FLAGS["verbosity"].present:
      # Library chatter (TFDS's notes on its own folders, say) would bury the one line a user needs;
      # --verbosity=0 (or -v 0) brings absl's info logging back.
      logging.set_verbosity(logging.ERROR)
    if training:
      _console_that_outlives_its_reader()
    errors.exit_on_user_error(started, argv)  # The argparse scripts' guard too: one way a command ends.

  def started(argv):
    initialize_distributed()
    try:
      main(argv)
    except Preempted as stop:  # A training loop's stop (SIGTERM, SIGINT, SIGHUP) after saving: its own line.
      print(str(stop), file=sys.stderr)
      sys.exit(stop.exit_code)

  def parse_flags(argv):
    try:
      return parse_command_line(argv, family_name)
    except UserError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)

  _define_help_flags()
  # What is loaded by now (JAX, flax, the family's modules: some 120k objects) lives as long as the process.
  # Frozen, it is no longer traversed by each full collection of the garbage collector, which tracing the first
  # jitted programs triggers again and again: the tests' tiny VAE run takes 0.3-0.7 s less CPU (medians of
  # alternated runs 4.0 -> 3.3 user CPU-s, and 5.0 -> 4.7 on a busier host).
  gc.freeze()
  app.run(guarded_main, flags_parser=parse_flags)


def _console_that_outlives_its_reader():
  """A training run's stdout and stderr that a closed console (`| head`, a dead `tee`, a full log disk) cannot
  stop (`progress.OutlivesItsReader`). Installed after absl has set up its logging, which tells its own
  stderr handler by identity; a closed descriptor (`>&-`), which Python gives as None, stays None."""
  sys.stdout, sys.stderr = (progress.OutlivesItsReader(stream)
                            if stream is not None and not isinstance(stream, progress.OutlivesItsReader) else stream
                            for stream in (sys.stdout, sys.stderr))
  handler = logging.get_absl_handler().python_handler
  if handler.stream is sys.__stderr__:  # absl's lines go through the same guard, and are printed once.
    handler.stream = sys.stderr


def run_family(name):
  """The command line of family `name`: its flags, then validate, prepare the workdir and train."""
  family = families.get(name)
  define_run_flags()
  define_config_flags(family.Config, family.HELP)

  def main(argv):
    del argv
    config = config_from_flags(family.Config)
    workdir_lib.check_stored_config(FLAGS.workdir, family)  # A hand-edited config.json is not the flags' fault.
    # flags.txt as gen_jax.train writes it: the config's values, one writer whichever way a run starts.
    run_lib.train_and_evaluate(family, config, FLAGS.workdir,
                               flags_text=config_lib.as_flags_text(config, FLAGS.workdir))

  run(main, family_name=name, training=True)
