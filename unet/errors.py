"""The package's own errors: each one means "bad input", and its message says what and where.

Everything the package refuses because of what it was given (a file, a folder, a value,
a run id) raises a :class:`UnetError`. The command line prints those in one line with
exit code 2; any other exception is a bug and keeps its traceback (exit code 1).

The file-naming subclasses live beside the code that raises them
(:class:`unet.imaging.ImageError`, :class:`unet.data.DatasetError`,
:class:`unet.model.ModelError`) and are all re-exported by ``unet``.
"""

from __future__ import annotations


class UnetError(Exception):
    """Bad input: a file, folder, value or run the package cannot use; the message names it."""


class ConfigError(UnetError, ValueError):
    """A value out of range or of the wrong kind (a training config, a threshold, a scale)."""


class RunError(UnetError, ValueError):
    """A training run that cannot be found, started, resumed or stopped as asked."""
