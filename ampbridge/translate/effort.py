"""Reasoning effort: the thinking suffix on a model name and each dialect's own setting.

``claude-opus-4-7(high)`` or ``qwen3(8192)`` name a model plus how hard it should think. The suffix is
read once into an :class:`Effort` (a level, a token budget, or both) and written back as the target's
setting: Anthropic ``thinking.budget_tokens``, OpenAI ``reasoning_effort`` / ``reasoning.effort``,
Gemini ``generationConfig.thinkingConfig``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Token budgets that stand for each level, for dialects that only take a budget.
LEVEL_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_SUFFIX = re.compile(r"^(?P<model>.+?)\((?P<value>[A-Za-z]+|\d+)\)$")


@dataclass(frozen=True)
class Effort:
    level: str  # one of LEVELS
    budget: int  # thinking tokens; 0 means thinking is off

    @classmethod
    def from_level(cls, level: str) -> Effort:
        level = level.lower()
        if level == "max":
            level = "xhigh"
        if level not in LEVEL_BUDGETS:
            level = "medium"
        return cls(level, LEVEL_BUDGETS[level])

    @classmethod
    def from_budget(cls, budget: int) -> Effort:
        if budget <= 0:
            return cls("none", 0)
        level = "low" if budget <= 2048 else "medium" if budget <= 12288 else "high"
        return cls(level, budget)

    @property
    def enabled(self) -> bool:
        return self.budget > 0


def split_model_suffix(model: str) -> tuple[str, Effort | None]:
    """``"m(high)"`` -> ``("m", Effort(high))``; a name without a known suffix comes back as is."""
    match = _SUFFIX.match(model.strip())
    if match is None:
        return model, None
    value = match["value"]
    if value.isdigit():
        return match["model"], Effort.from_budget(int(value))
    if value.lower() in (*LEVELS, "max", "auto"):
        return match["model"], None if value.lower() == "auto" else Effort.from_level(value)
    return model, None
