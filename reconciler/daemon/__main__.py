"""`python -m reconciler.daemon [PATH...] [--listen HOST:PORT] [--resync SECONDS] [--no-prune] [--max-prune PERCENT]
[--prune-grace SECONDS] [--state URL] [--read-timeout SECONDS] [--max-connections N]`.

A minimal entry point for running the daemon without the CLI (process-level tests, debugging);
`capctl run` is the user-facing command.
"""

import argparse
import sys

from reconciler.daemon.connections import READ_TIMEOUT
from reconciler.daemon.controller import PRUNE_GRACE
from reconciler.daemon.main import run_daemon
from reconciler.daemon.policy import MAX_PRUNE_PERCENT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m reconciler.daemon")
    parser.add_argument("paths", nargs="*", default=["specs"])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--resync", type=float, default=30.0)
    parser.add_argument("--no-prune", dest="prune", action="store_false")
    parser.add_argument("--max-prune", type=float, default=MAX_PRUNE_PERCENT)
    parser.add_argument("--prune-grace", type=float, default=PRUNE_GRACE)
    parser.add_argument("--state", default=None)
    parser.add_argument("--read-timeout", type=float, default=READ_TIMEOUT)
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    return run_daemon(
        args.paths,
        listen=args.listen,
        resync=args.resync,
        prune=args.prune,
        state_url=args.state,
        log_level=args.log_level,
        max_prune=args.max_prune,
        prune_grace=args.prune_grace,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
    )


if __name__ == "__main__":
    sys.exit(main())
