"""The one exception type for a user's mistake.

Library code raises `UserError` for bad input (an unknown dataset, a missing file, data of the wrong
shape ...). Experiment entry points catch it and print its message as a single line on stderr, then exit
non-zero, so that a user never sees a traceback for their own mistake. Every message names the bad value
and what would have been allowed. Scripts built on argparse get the same contract from
`OneLineArgumentParser` and `exit_on_user_error`, which is also the guard of the absl commands
(`experiments.main.run`): every command ends a mistake, a reader gone away and Ctrl-C the same way.
"""

import argparse
import os
import signal
import sys


class UserError(Exception):
  """Bad input from the user; the message is one line naming the value and what is allowed."""


class OneLineArgumentParser(argparse.ArgumentParser):
  """argparse whose usage mistakes end as UserErrors do: one line on stderr and exit status 2."""

  def error(self, message):
    print(f"error: {message}; see --help", file=sys.stderr)
    sys.exit(2)


def exit_on_user_error(main, *args):
  """`main(*args)` as a command runs it: a UserError becomes its one line on stderr and exit status 2, a reader
  that went away (`| head -1`) a quiet exit 128 + SIGPIPE, and Ctrl-C one line and exit 128 + SIGINT."""
  try:
    return main(*args)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except BrokenPipeError:
    # The reader of a script's output went away (`scripts/evaluate.py ... | head -1`): end quietly, as Unix tools
    # do on SIGPIPE, with stdout pointed at /dev/null so that Python's flush at exit does not fail again.
    if sys.__stdout__ is not None:  # None: stdout closed outright (`>&-`), nothing left to flush.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
    sys.exit(128 + signal.SIGPIPE)
  except KeyboardInterrupt:
    # Ctrl-C outside a training loop (which saves and raises its own stop): before training, or in a script
    # such as evaluate.py. Checkpoints, config.json, samples.npy and metrics rows are written whole or not at
    # all (gen_jax.files), so a rerun finds no half-written record.
    print("stopped by SIGINT; what was written before is intact; re-run the same command to do the rest",
          file=sys.stderr)
    sys.exit(128 + signal.SIGINT)
