"""The exceptions that mean "the user asked for something that cannot be done", not "ldmkit has a bug".

`ldmkit …` (ldmkit/cli) prints an `LdmkitError` as one line naming what is wrong and what is allowed,
with exit code 2; any other exception is a bug and keeps its traceback (exit code 1). Each concrete
type is also a ``ValueError`` (`TrainingDiverged` a ``FloatingPointError``), so Python callers'
``except ValueError`` keeps working. This module imports nothing heavy: the CLI imports it first.
"""

from __future__ import annotations


class LdmkitError(Exception):
    """A user's mistake or an unusable input: printed by the CLI as one line, exit code 2."""


class UsageError(LdmkitError, ValueError):
    """An argument or option value that is not allowed (a size, a count, a name, an output path)."""


class ConfigError(LdmkitError, ValueError):
    """A configuration value a user wrote is wrong; the message names the field and what is allowed."""


class CheckpointError(LdmkitError, ValueError):
    """A model folder or weights file is missing, incomplete or corrupt."""


class DataError(LdmkitError, ValueError):
    """Training data that cannot be used: a missing or empty folder, a malformed caption file.

    The message is one line naming the file or folder and what was expected.
    """


class TrainingDiverged(LdmkitError, FloatingPointError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""
