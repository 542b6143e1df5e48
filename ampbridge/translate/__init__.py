"""Translation between the model wire formats: Anthropic Messages, OpenAI Chat Completions, OpenAI
Responses and Gemini generateContent (SPEC §14).

A request is read into a neutral form (:mod:`.conversation`) and written in the target's dialect;
a reply is read into neutral events (:mod:`.events`) and written in the client's dialect, one
backend event at a time, so streams keep flowing. Nothing here makes network calls.

- :func:`translate_request` — before the backend call.
- :class:`ReplyTranslator` — one per call, for the backend's reply (JSON, SSE, or an error).
- :class:`TranslatingSend` — wraps an ASGI ``send`` so a relayed reply is translated on its way out.
"""

from ampbridge.translate.asgi import TranslatingSend
from ampbridge.translate.dialect import Dialect, target_path
from ampbridge.translate.effort import Effort, split_model_suffix
from ampbridge.translate.reply import ReplyTranslator
from ampbridge.translate.request import TranslatedRequest, translate_request

__all__ = [
    "Dialect",
    "Effort",
    "ReplyTranslator",
    "TranslatedRequest",
    "TranslatingSend",
    "split_model_suffix",
    "target_path",
    "translate_request",
]
