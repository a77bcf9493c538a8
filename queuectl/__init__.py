"""queuectl: a persistent queue of shell commands, driven through the queuectld daemon."""

__version__ = "0.1.0"
