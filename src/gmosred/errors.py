"""Exceptions that carry a one-line message for the user."""


class GmosredError(Exception):
    """Base class: its message is meant to be shown to the user as is."""


class GmosFileError(GmosredError):
    """A file that cannot be used: unreadable, not GMOS, missing a keyword.

    The message always starts with the file name.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
