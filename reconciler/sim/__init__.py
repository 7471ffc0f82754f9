"""The local vendor simulator (`capctl sim`): a faithful stand-in for Volcengine and ZEGO.

It verifies real request signatures, enforces the documented limits, lets tasks idle out in empty rooms,
delivers signed callbacks and injects faults on demand; see docs/simulator.md. It is written independently
of `reconciler.providers`, so a bug shared with the providers cannot hide.
"""

from reconciler.sim.app import create_app, serve
from reconciler.sim.clocks import ScaledClock
from reconciler.sim.config import SimConfig, VolcApp, ZegoApp
from reconciler.sim.faults import FaultConfig
from reconciler.sim.simulator import Simulator

__all__ = ["FaultConfig", "ScaledClock", "SimConfig", "Simulator", "VolcApp", "ZegoApp", "create_app", "serve"]
