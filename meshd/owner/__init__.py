"""The owner policy: meshd on a workstation steps aside for the machine's owner.

``policy`` decides (sans I/O), ``signals`` reads the machine, ``service``
acts on the runner's gate and its engines, ``api`` serves ``/v1/owner`` and
the drain routes.  See docs/operations.md, "Running on a workstation".
"""

from .policy import PRESETS, Decision, OwnerMachine, OwnerPolicyOptions, Readings
from .service import OwnerService

__all__ = ["PRESETS", "Decision", "OwnerMachine", "OwnerPolicyOptions", "OwnerService", "Readings"]
