"""The user-facing exceptions. The CLI turns each into one line and exit code 2."""


class AalError(Exception):
    """Bad input or state a user can fix; the message names the problem and the fix."""


class ConfigError(AalError):
    """One or more problems in a sweep config, all reported together."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def __reduce__(self):  # pickle and copy (Ray ships errors between processes) with the constructor's arguments
        return type(self), (self.source, self.problems)


class DataError(AalError):
    """A dataset folder that does not match its on-disk format."""


class BadImagesError(DataError):
    """Image files that cannot be decoded; `bad` holds (path, what is wrong) for every one of them."""

    def __init__(self, root: str, bad: list[tuple[str, str]], total: int):
        self.root, self.bad, self.total = root, bad, total
        named = ", ".join(f"{_relative(p, root)} ({problem})" for p, problem in bad)
        super().__init__(
            f"{root}: {len(bad)} of {total} image(s) cannot be decoded: {named}; replace them with "
            f"the original files (`aal-sweep dataset {root} --verify` checks every image)"
        )

    def __reduce__(self):
        return type(self), (self.root, self.bad, self.total)


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path
