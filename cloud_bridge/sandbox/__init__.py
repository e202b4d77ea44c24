"""A billing + loyalty sandbox that speaks DESIGN.md's "Sandbox contract" over real HTTP.

The demo and the tests use it in place of the utility's systems: it refuses what billing refuses
(decreasing value, unknown payer or meter, outside the window when told so), fails on demand (503,
429 with Retry-After, slow answers) and keeps what it accepted in its own SQLite file so a test can
check what billing really received.
"""

from cloud_bridge.sandbox.app import create_app
from cloud_bridge.sandbox.faults import Fault, FaultBoard
from cloud_bridge.sandbox.server import SandboxServer, load_accounts
from cloud_bridge.sandbox.store import SandboxStore

__all__ = ["Fault", "FaultBoard", "SandboxServer", "SandboxStore", "create_app", "load_accounts"]
