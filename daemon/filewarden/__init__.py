"""filewarden: a stable-id catalog of the files under your roots."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("filewarden")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
