"""The one exception type for a user's mistake.

Library code raises `UserError` for bad input (an unknown dataset, a missing file, data of the wrong
shape ...). Experiment entry points catch it and print its message as a single line on stderr, then exit
non-zero, so that a user never sees a traceback for their own mistake. Every message names the bad value
and what would have been allowed.
"""


class UserError(Exception):
  """Bad input from the user; the message is one line naming the value and what is allowed."""
