"""Exit codes and the exceptions that carry them out of a runbook.

| code | meaning |
| --- | --- |
| 0 | done: every step succeeded, or there was nothing left to do |
| 1 | failed: an API call or a verification failed; re-running resumes where it stopped |
| 2 | usage: bad arguments, unreadable or incomplete stack outputs, missing token |
| 3 | refused for safety: a precondition does not hold; nothing was changed by the refused step |
| 4 | waiting for the operator: the next step is theirs (a `pulumi up`, printed); re-running continues |
| 130 | interrupted (Ctrl-C); re-running resumes where it stopped |
"""

from __future__ import annotations

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_WAITING = 4
EXIT_INTERRUPTED = 130


class OpsError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, step: str = "runbook"):
        super().__init__(message)
        self.step = step


class UsageError(OpsError):
    """Bad arguments or stack outputs: nothing was attempted."""

    exit_code = EXIT_USAGE


class Refused(OpsError):
    """A safety precondition does not hold. The message says why and what to do."""

    exit_code = EXIT_REFUSED


class StepFailed(OpsError):
    """An API call or a verification failed. Re-running resumes from the detected state."""

    exit_code = EXIT_FAILED
