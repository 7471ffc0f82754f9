"""`python -m reconciler` is `capctl` (used by the demo to start its simulator and daemon)."""

from reconciler.cli import main

main()
