"""Errors of filewarden and what an OSError means here, decided once."""

from __future__ import annotations

import enum
import errno


class FilewardenError(Exception):
    """Base class of the errors filewarden raises on purpose."""


class ConfigError(FilewardenError):
    """A config file or a command line that cannot be used; one line for the user."""


class CatalogError(FilewardenError):
    """The catalog cannot be opened or is of an unknown schema."""


class Fault(enum.Enum):
    """What an OSError met while reading a root means for the catalog."""

    GONE = "gone"  # the entry is not there (any more): a normal outcome of a race
    DENIED = "denied"  # we may not read it: keep what we knew, warn
    ROOT = "root"  # the filesystem under the root may have gone away: check the root
    OTHER = "other"  # anything else: skip this entry, warn


# EIO and friends are what a vanished USB disk or a dead network share answer
# with; they must never be read as "the file was deleted".
_ROOT_ERRNOS = frozenset(
    e
    for e in (
        errno.EIO,
        getattr(errno, "ENOTCONN", None),
        getattr(errno, "ESTALE", None),
        errno.ENODEV,
        errno.ENXIO,
        getattr(errno, "EHOSTDOWN", None),
        getattr(errno, "EHOSTUNREACH", None),
        getattr(errno, "ETIMEDOUT", None),
        getattr(errno, "EREMOTEIO", None),
    )
    if e is not None
)


def classify(exc: OSError) -> Fault:
    """Map an OSError raised while reading under a root to what it means."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return Fault.GONE
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Fault.DENIED
    if exc.errno in _ROOT_ERRNOS:
        return Fault.ROOT
    return Fault.OTHER
