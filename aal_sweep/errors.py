"""The user-facing exceptions. The CLI turns each into one line and exit code 2."""


class AalError(Exception):
    """Bad input or state a user can fix; the message names the problem and the fix."""


class ConfigError(AalError):
    """One or more problems in a sweep config, all reported together."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class DataError(AalError):
    """A dataset folder that does not match its on-disk format."""
