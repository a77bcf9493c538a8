"""queuectl: a persistent queue of shell commands, driven through the queuectld daemon."""

__version__ = "0.1.0"
#: The wire protocol's version: `daemon.hello` compares it (here, not in protocol.py, so that
#: `queuectl --version` and the client need not load pydantic).
PROTOCOL_VERSION = 1
