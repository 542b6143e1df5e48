"""ChatGPT Plus/Pro subscriptions as a model provider, through OpenAI's Codex backend.

The parts: ``oauth`` (login flows), ``jwt_claims`` (who a token belongs to), ``store`` and
``codex_file`` (where credentials live), ``accounts`` (the pool: refresh and cooldowns),
``dialect`` (the Codex backend's request and reply shape), ``backend`` (the ASGI app) and
``commands`` (``ampbridge login chatgpt``, ``logout chatgpt``, ``accounts``).
"""

from .backend import ChatGPTBackend

__all__ = ["ChatGPTBackend"]
