"""capctl: a declarative reconciler for real-time-communication capture jobs.

The package keeps a one-way flow: `spec` (load, validate, expand) and `plan` / `render` are pure;
`providers` talk to vendors, `state` persists, and only `cli` and `daemon` wire the pieces together.
"""

__version__ = "0.1.0"
