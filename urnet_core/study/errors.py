"""Errors of a study that are the user's to fix, reported as one line rather than a traceback.

- :class:`NotebookFailedError`: a notebook raised; the message names the notebook, the cell,
  the error and the executed copy kept for inspection. ``urnet study`` prints it as one line
  (``-v`` adds the kernel's traceback and the command's).
- :class:`StudyInputError`: a notebook's parameters or data are wrong. Raised by the setup
  cell; Jupyter shows it as its one-line message instead of a traceback through the config
  code (:meth:`StudyInputError._render_traceback_`).

This module imports nothing heavy, so the command line can name these classes at start-up.
"""

from __future__ import annotations

from pathlib import Path


class NotebookFailedError(RuntimeError):
    """A study notebook failed; ``executed`` is its partly executed copy (None when absent)."""

    def __init__(self, message: str, *, notebook: str, executed: Path | None = None) -> None:
        super().__init__(message)
        self.notebook, self.executed = notebook, executed


class StudyInputError(ValueError):
    """Bad notebook parameters or data: the message says which file, line or key."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of formatting the frames: the message is the whole story
        # (which key, which file, which line); the frames only lead through config.py.
        return [f"{type(self).__name__}: {self}"]
