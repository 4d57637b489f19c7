"""User-facing errors: what went wrong, where, and how to fix it — no traceback soup.

Every error a user can cause (bad params, a missing folder, a corrupt archive, a wrong checksum) is raised
as :class:`OccreidError`. The CLI and the stage entry points catch it and print its message alone, then
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class OccreidError(Exception):
    """An error caused by input, with the file concerned, the problem and the fix."""

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path else ""
        fix = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{where}{self.problem}{fix}"


def did_you_mean(word: str, choices) -> str:
    """A short hint listing the valid choices, closest first."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}valid: {', '.join(choices)}"
