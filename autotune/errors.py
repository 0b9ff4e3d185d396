"""Errors with a clear owner: the user (exit code 2) or a candidate (a FAILED trial)."""


class UserError(Exception):
    """Bad user input (budget, device, YAML, model path): one readable line, exit code 2."""


class CandidateError(Exception):
    """A candidate failed at one stage; the trial is FAILED with ``stage: message`` as reason."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
