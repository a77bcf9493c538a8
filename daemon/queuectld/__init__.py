"""queuectld: the daemon that owns the job store and runs jobs in worker slots."""

from queuectl import __version__

__all__ = ["__version__"]
