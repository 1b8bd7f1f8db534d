"""The one exception base of worldfleet: every failure an operator can meet and act on.

Each subclass says what failed; `hint` says what to do about it. The `fleet` CLI catches
`FleetError` once, at its edge, and prints one line with the hint and exits with `exit_code`
(2 for a wrong option or input, as argument parsers do; 1 for a failure of the world), never a
stack trace. Library callers catch the subclass they can handle, as MLflow's callers catch
`MlflowException`.
"""

from __future__ import annotations


class FleetError(RuntimeError):
    """An expected failure with a message that names what failed."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(FleetError):
    """An option or input the command cannot use: an unknown profile, a directory that holds no policy."""

    exit_code = 2
