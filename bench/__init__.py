"""queuectl's benchmark suite: `python -m bench` (see bench/README.md).

Every scenario starts its own `queuectld` on a temp state dir and socket, measures, and stops it.
Ratios are always taken against a baseline measured in the same run, because the machines this
runs on are shared and absolute times drift.
"""
