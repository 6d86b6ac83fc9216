"""``acklog simulate``: realistic webhook sequences, in each provider's own format.

``scenarios`` plans what to send and the state each message must end in, each provider's
module builds its bodies (``PROVIDER.simulator``, in ``projections.providers``), ``send``
posts them (signed as the provider signs), ``command`` is the CLI around it.
"""

from __future__ import annotations

from service.cli.simulate.scenarios import ALL, SCENARIOS, Expected, Plan, plan
from service.cli.simulate.send import Sent, SimulationResult, simulate

__all__ = [
    "ALL",
    "SCENARIOS",
    "Expected",
    "Plan",
    "Sent",
    "SimulationResult",
    "plan",
    "simulate",
]
