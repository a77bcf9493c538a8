"""A stand-in for a daemon, run as its own process so a test can kill -9 or SIGSTOP it while it
holds the keeper connection: `python holder.py SOCKET SPEC_JSON EXTEND_EVERY_S`.

It connects, spawns SPEC, prints `spawned PID`, then (EXTEND_EVERY_S > 0) moves the deadline to
spec.deadline_s from now every EXTEND_EVERY_S, printing `extended` each time, as a daemon does
after each lease renewal; or just holds the connection.
"""

from __future__ import annotations

import json
import sys
import time

from queuectld.keeper_client import KeeperClient, SpawnSpec


def main() -> None:
    socket_path, spec_json, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
    spec = SpawnSpec(**json.loads(spec_json))
    client = KeeperClient.connect(socket_path)
    print(f"spawned {client.spawn(spec)}", flush=True)
    while True:
        if every > 0:
            time.sleep(every)
            client.extend({spec.key: spec.deadline_s})
            print("extended", flush=True)
        else:
            time.sleep(60)


if __name__ == "__main__":
    main()
