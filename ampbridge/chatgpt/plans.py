"""Which model ids a ChatGPT plan may use through the Codex backend (reference §6).

The live list is only known to the backend; this is the catalogue as last observed. Plans not
listed here (``enterprise``, ``edu``, new names) get the widest list, as CLIProxyAPI does.
"""

from __future__ import annotations

_SHARED = ("gpt-5.4-mini", "gpt-5.5", "codex-auto-review", "gpt-5.6-terra", "gpt-5.6-luna")
_WORK = (*_SHARED, "gpt-5.4", "gpt-5.6-sol")
_PERSONAL = (*_WORK, "gpt-5.3-codex-spark")

_BY_PLAN: dict[str, frozenset[str]] = {
    "free": frozenset(_SHARED),
    "team": frozenset(_WORK),
    "business": frozenset(_WORK),
    "go": frozenset(_WORK),
    "plus": frozenset(_PERSONAL),
    "pro": frozenset(_PERSONAL),
}

REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


def plan_models(plan: str | None) -> frozenset[str]:
    """The model ids a plan offers (an unknown or missing plan: the Plus/Pro list)."""
    return _BY_PLAN.get((plan or "").lower(), _BY_PLAN["pro"])
