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


class DamagedArtifactError(TGPError):
    """A file a run or stage wrote no longer matches its record (truncated, altered, missing): see
    :mod:`tgp.integrity`. ``path`` is the file, ``reason`` what differs."""

    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path} is damaged: {reason}. Fix: {fix}")


class DiskFullError(TGPError, OSError):
    """No room to write a file: a full disk, a used-up quota, a file-size limit (see
    :func:`tgp.io.no_room`). Not a setting: exit code 1, like a crash, but one paragraph. An
    ``OSError`` too, so code that tolerates a failed write tolerates this one."""

    exit_code = 1

    def __init__(self, path, problem: str, fix: str):
        self.path = path
        super().__init__(f"{problem} Fix: {fix}")

    def __str__(self) -> str:
        return str(self.args[0])
