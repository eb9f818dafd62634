"""The workdir as a single-writer store: its run lock, its `config.json` and `flags.txt`.

- **The run lock.** A run holds an exclusive OS lock (`flock`) on `<workdir>/run.lock` for its whole life;
  the kernel releases it when the process ends, however it ends, so a killed run never blocks the next.
  A second run on a held workdir stops with one line naming the holder's pid and host. Only process 0 of
  a multi-host run takes it: the processes of one run are one writer. Network file systems without
  working `flock` (some NFS set-ups) give no protection across machines.
- **config.json** records the run's settings and its family as the run started; it is never rewritten. A
  resume with other shaping settings is refused naming each one. A damaged config.json stops the run with
  one line; nothing is deleted (it cannot be rebuilt: it is the record of how the run started).
- **flags.txt** holds the resolved flags (`config.as_flags_text`); a resume with other flags appends the new set.
Every file here is written to a temporary name and renamed (`gen_jax.files`).
"""

import contextlib
import dataclasses
import json
import os
import socket

from gen_jax import config as config_lib, files, parallel
from gen_jax.errors import UserError

CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.txt"
LOCK_FILE = "run.lock"


def check_workdir(workdir):
  """The workdir path a run may use (existing or not); raises UserError without touching anything."""
  if not workdir:
    raise UserError("--workdir is missing; allowed: a directory path (created if needed)")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file; allowed: a directory (new or an earlier run's)")
  return workdir


def read_config(workdir):
  """The stored config.json as a dict, or None for a new workdir; one line if it is damaged."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, ValueError) as error:
    raise UserError(f"{path} cannot be read ({str(error).splitlines()[0][:120]}); allowed: the run's own "
                    "config.json (restore it, e.g. from the first block of flags.txt) or a fresh --workdir; "
                    "nothing was changed") from None
  if not isinstance(stored, dict):
    raise UserError(f"{path} holds no settings object; allowed: the run's own config.json or a fresh --workdir")
  return stored


def settings_record(family_name, config):
  """What config.json holds: the config's fields and the family's name."""
  return {config_lib.FAMILY_KEY: family_name} | config_lib.as_flat_dict(config)


def check_resumable(workdir, settings, may_change, defaults=None):
  """Refuses settings that differ from the stored run's in anything but `may_change`; reads only.

  A setting the stored run lacks was added to its family later and takes its value from `defaults` (the
  family's default settings record): a new setting's default is always the behaviour from before it existed.
  """
  stored = read_config(workdir)
  if stored is None:
    return
  stored = {key: value for key, value in (defaults or {}).items() if key != config_lib.FAMILY_KEY} | stored
  family = config_lib.FAMILY_KEY
  if stored.get(family) != settings[family]:
    raise UserError(f"workdir {workdir} holds a run of the {stored.get(family)!r} family, not "
                    f"{settings[family]!r}; allowed: that family's experiment, or a fresh --workdir")
  differing = sorted(key for key in set(stored) | set(settings)
                     if key not in may_change and stored.get(key) != settings.get(key))
  if differing:
    # As flags are written (--hidden_sizes=64,32), so that the run's own values can be pasted back.
    changes = ", ".join(f"--{key}={config_lib.flag_text(settings.get(key))} (run has "
                        f"{config_lib.flag_text(stored.get(key))})" for key in differing)
    # A setting that may change on other resumes (the run's length) says what fixes it for this one.
    fixed = config_lib.RUN_LENGTH & set(differing) and config_lib.why_length_is_fixed(settings.get("lr_schedule"))
    raise UserError(f"workdir {workdir} holds a run with other settings: {changes}"
                    f"{f'; {fixed}' if fixed else ''}; allowed: the run's own values, or a fresh --workdir")


def check_stored_config(workdir, family):
  """The config of the `family` run in `workdir` (None for none, or a run of another family, which
  `check_resumable` refuses); reads only. A config.json the family itself refuses (a value edited by hand, say)
  gets one line that names the file, not the flags of the command (the resume check would blame those)."""
  stored = read_config(workdir) if workdir and os.path.isdir(workdir) else None
  if stored is None or stored.get(config_lib.FAMILY_KEY) != family.NAME:
    return None
  known = {field.name for field in dataclasses.fields(family.Config)}
  try:  # The type of each value first: validate assumes a config of the right types.
    config = config_lib.from_settings(family.Config, {k: v for k, v in stored.items() if k in known}, family.NAME)
    family.validate(config)
  except UserError as error:
    refusal = str(error).removeprefix("--")
    raise UserError(f"{os.path.join(workdir, CONFIG_FILE)} holds settings the {family.NAME} family refuses: "
                    f"{refusal}; it is the run's record, not this command's flags: restore it (e.g. from the "
                    "first block of flags.txt) or use a fresh --workdir; nothing was changed") from None
  return config


@contextlib.contextmanager
def run_lock(workdir):
  """Holds the workdir's exclusive run lock for the `with` block (process 0 only); creates the workdir."""
  if not parallel.is_main_process():
    yield
    return
  lock_path = os.path.join(workdir, LOCK_FILE)
  with contextlib.ExitStack() as stack:
    try:  # Only taking the lock is guarded: a BlockingIOError of the run itself is not "in use".
      with _bookkeeping_writes(workdir):
        descriptor = stack.enter_context(files.held_lock(lock_path, wait=False))
    except BlockingIOError:
      with open(lock_path, errors="replace") as lock_file:
        holder = lock_file.read(200).strip() or "another process"
      raise UserError(f"--workdir={workdir} is in use by {holder}; allowed: one run per workdir: wait for "
                      "that run to end (or stop it) and re-run this command, or use another --workdir") from None
    with _bookkeeping_writes(workdir):
      os.ftruncate(descriptor, 0)
      os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    yield


@contextlib.contextmanager
def _bookkeeping_writes(workdir):
  """An OS error of the workdir's own files (creating it, the lock, config.json, flags.txt) as one line: it
  comes before the run starts, from a path the user cannot write or a disk without room."""
  try:
    yield
  except BlockingIOError:
    raise
  except OSError as error:
    where = f" ({error.filename})" if error.filename else ""
    raise UserError(f"--workdir={workdir} cannot be written: {error.strerror or error}{where}; "
                    "allowed: a directory this user can create and write, on a disk with room; the run did "
                    "not start") from None


# Between the flag sets of flags.txt: the first start's flags, then those of each start that changed them.
RESUMED_FLAGS_SEPARATOR = "# --- resumed with these flags ---\n"


def record(workdir, settings, may_change, flags_text=None, defaults=None):
  """Under the run lock: config.json for a new run (checked again for a resumed one), flags.txt appended."""
  check_resumable(workdir, settings, may_change, defaults)  # Again, now that no other run can write.
  if parallel.is_main_process():
    with _bookkeeping_writes(workdir):
      _write_records(workdir, settings, flags_text, defaults)


def _flag_lines(text):
  """A flag set's lines, as a set that spells each number one way. flags.txt of runs started before the command
  line wrote it with `config.as_flags_text` (absl wrote it) differs only in a blank line for an unset flag and a
  list's numbers as typed (`--log_variance_clamp=-6,2`, the config's `-6.0,2.0`): the same flags, no new set."""
  return {_one_spelling(line.strip()) for line in text.splitlines()} - {""}


def _one_spelling(line):
  name, equals, value = line.partition("=")
  return name + equals + ",".join(_number_text(item) for item in value.split(",")) if equals else line


def _number_text(text):
  """A number as the config's float holds it (-6, -6.0 and -6e0 alike); any other text as it is."""
  try:
    return repr(float(text))
  except ValueError:
    return text


def _flag_name(line, settings):
  """The setting a flags.txt line sets (`--noconditional` sets conditional)."""
  name = line.strip().removeprefix("--").partition("=")[0]
  return name[2:] if name not in settings and name.startswith("no") else name


def _write_records(workdir, settings, flags_text, defaults=None):
  config_path = os.path.join(workdir, CONFIG_FILE)
  stored = read_config(workdir)
  if stored is None:
    files.write_json(config_path, settings)
    stored = settings
  if flags_text is None:
    return
  # A setting added to the family after the run started, at its default, is what the run always ran with:
  # not a new flag of this start (an older run's rerun would otherwise record a new set for it alone).
  added_at_default = {name for name, value in settings.items()
                      if name not in stored and defaults is not None and defaults.get(name) == value}

  def compared(text):  # On both sides: the block that recorded such a setting is no different either.
    return _flag_lines("".join(line for line in text.splitlines(keepends=True)
                               if _flag_name(line, settings) not in added_at_default))

  flags_path = os.path.join(workdir, FLAGS_FILE)
  recorded = ""
  if os.path.exists(flags_path):
    with open(flags_path) as f:
      recorded = f.read()
  # New, or resumed with other flags than the latest start's (earlier ones included): keep the history, add
  # the new set, so that the last block is always what the run now runs with. Flags are a set: the same ones
  # in another order (a family's fields reordered) or as an older run wrote them (`_flag_lines`) are the same.
  if compared(recorded.split(RESUMED_FLAGS_SEPARATOR)[-1]) != compared(flags_text):
    separator = RESUMED_FLAGS_SEPARATOR if recorded else ""
    files.write_text(flags_path, recorded + separator + flags_text)
