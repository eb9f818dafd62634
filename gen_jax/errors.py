"""The one exception type for a user's mistake.

Library code raises `UserError` for bad input (an unknown dataset, a missing file, data of the wrong
shape ...). Experiment entry points catch it and print its message as a single line on stderr, then exit
non-zero, so that a user never sees a traceback for their own mistake. Every message names the bad value
and what would have been allowed. Scripts built on argparse get the same contract from
`OneLineArgumentParser` and `exit_on_user_error`.
"""

import argparse
import sys


class UserError(Exception):
  """Bad input from the user; the message is one line naming the value and what is allowed."""


class OneLineArgumentParser(argparse.ArgumentParser):
  """argparse whose usage mistakes end as UserErrors do: one line on stderr and exit status 2."""

  def error(self, message):
    print(f"error: {message}; see --help", file=sys.stderr)
    sys.exit(2)


def exit_on_user_error(main, *args):
  """`main(*args)`; a UserError becomes its one line on stderr and exit status 2."""
  try:
    return main(*args)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
