"""The one error class for user errors.

Anything a user can cause — a missing or undecodable file, a bad option, an
unknown name, a failed download, a full disk — raises a :class:`JukemirError`
whose ``str()`` is one line saying what is wrong and, where it helps, what to
do. The ``jukemir`` command prints exactly that line (``jukemir <command>:
error: ...``) and exits with status 2. Every other exception is a bug and keeps
its traceback.

Subclasses also derive from the built-in exception a caller would expect
(:class:`UserError` is a ``ValueError``), so ``except ValueError`` keeps
working for library users.
"""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines, tabs) folded to one space.

    Control characters other than white space are shown as ``\\xNN`` escapes, so
    a file name can never forge a line of its own in an error message.
    """
    out = []
    for ch in " ".join(str(text).split()):
        out.append(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class JukemirError(Exception):
    """Base class of every error a user can cause. ``str()`` is one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class UserError(JukemirError, ValueError):
    """Bad input: an argument, option, name, file or configuration that cannot be used."""


class NotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named, or an earlier stage's output, does not exist."""


class DeviceError(UserError):
    """A torch device that this machine or this build of torch does not have."""
