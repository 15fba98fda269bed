"""User-facing errors.

Every error a user can cause by a setting or by missing data derives from :class:`TGPError`.
The entry point prints such an error as one paragraph (no traceback) and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TGPError(Exception):
    """An error caused by the user's input, with a message that names the setting and the fix."""

    exit_code = 2


class ConfigError(TGPError):
    """A setting has a value that cannot work."""

    def __init__(self, setting: str, value: object, problem: str, fix: str):
        self.setting, self.value, self.problem, self.fix = setting, value, problem, fix
        super().__init__(f"{setting}={value!r}: {problem} Fix: {fix}")


class DataNotFoundError(TGPError):
    """A dataset's files are missing or unreadable."""


class CheckpointMismatchError(TGPError):
    """A checkpoint or mask file does not fit the model or data it is loaded into."""
