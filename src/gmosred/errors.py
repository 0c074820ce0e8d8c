"""Exceptions that carry a one-line message for the user, and the one line for an operating-system error."""
import errno


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


def os_problem(e: OSError) -> str:
    """One line for an OSError: the file, what went wrong and, where it helps, what to do."""
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    what = e.strerror or str(e)
    hint = {errno.ENOSPC: "the disk is full: free space or use another folder",
            errno.EDQUOT: "the disk quota is full: free space or use another folder",
            errno.EROFS: "the folder is read-only: use another one",
            errno.EACCES: "no permission: use a folder you can write to, or fix its permissions"}.get(e.errno)
    return f"{where}{what}{f' ({hint})' if hint else ''}"
