"""Connects each model call to the usage ledger and the metrics (SPEC §16).

``AmpFallback`` hands every decided call's reply ``send`` to a ``CallWatch``; the watch wraps it
in a ``UsageWatchingSend`` that reads token usage without touching the bytes, and when the reply
ends records one ledger row and the call's metrics. Clients appear by a short label derived from
their key, never the key.
"""

from __future__ import annotations

import hashlib
import time

from starlette.types import Send

from .accounting import ReplyOutcome, UsageWatchingSend
from .fallback import ModelCall
from .ledger import UsageLedger, UsageRow
from .mapping import RouteDecision
from .metrics import Metrics

_LOCAL = frozenset({RouteDecision.LOCAL, RouteDecision.MAPPED})


def client_label(client_key: str | None) -> str:
    """``key-1a2b3c4d`` for a client key (a hash prefix: stable, not reversible), else ``-``."""
    if not client_key:
        return "-"
    return "key-" + hashlib.sha256(client_key.encode("utf-8")).hexdigest()[:8]


class CallWatch:
    def __init__(self, metrics: Metrics, ledger: UsageLedger | None) -> None:
        self.metrics = metrics
        self.ledger = ledger

    def __call__(self, call: ModelCall, send: Send) -> UsageWatchingSend:
        def finished(outcome: ReplyOutcome) -> None:
            self.metrics.observe_call(
                decision=call.decision, provider=call.provider, model=call.requested, outcome=outcome
            )
            if call.decision in _LOCAL and outcome.status in (502, 504):
                self.metrics.backend_error(call.provider, f"status_{outcome.status}")
            if self.ledger is not None:
                row = UsageRow.of_call(
                    outcome,
                    decision=call.decision,
                    client=client_label(call.client_key),
                    provider=call.provider,
                    requested_model=call.requested,
                    served_model=call.served,
                    time=time.time(),
                )
                self.ledger.record(row)

        return UsageWatchingSend(send, dialect=call.dialect, on_finish=finished)
