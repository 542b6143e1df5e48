"""A ``type: chatgpt`` provider entry as one of the local backends (SPEC §15).

``ChatGPTProvider`` puts a ``ChatGPTBackend`` (the ASGI app serving ``POST /v1/responses`` with
the logged-in ChatGPT accounts) behind the same questions ``LocalBackends`` asks of an HTTP
backend: its name and wire format, which models it serves (those the accounts' plans offer,
while an account can take a call), the name a model is sent under, and which endpoints it speaks
(Responses only: Chat Completions and the other dialects reach it through translation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from .chatgpt import ChatGPTBackend
from .chatgpt.backend import DEFAULT_BASE_URL
from .chatgpt.oauth import DEFAULT_AUTH_URL
from .http_client import SharedClient
from .models import ModelPatterns, WireFormat
from .routes import Endpoint

CHATGPT_TYPE = "chatgpt"


def is_chatgpt(config: Any) -> bool:
    """Whether a provider entry is a ChatGPT subscription."""
    return str(getattr(config, "type", "")) == CHATGPT_TYPE


class ChatGPTProvider:
    """One ``type: chatgpt`` provider entry, served by a ``ChatGPTBackend``."""

    wire_format = WireFormat.OPENAI
    needs_discovery = False
    configured: ModelPatterns | None = None  # its models come from the accounts' plans

    def __init__(
        self,
        config: Any,
        *,
        client: SharedClient,
        data_dir: Path,
        max_body_size: int,
        default_proxy_url: str = "",
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.proxy_url: str = config.proxy_url or default_proxy_url
        proxy_url = self.proxy_url
        self.app = ChatGPTBackend(
            data_dir,
            client=lambda: client.client_for(proxy_url),
            base_url=config.base_url or DEFAULT_BASE_URL,
            auth_url=getattr(config, "auth_url", "") or DEFAULT_AUTH_URL,
            accounts=getattr(config, "accounts", None),
            max_body_size=max_body_size,
        )

    def __repr__(self) -> str:
        return f"ChatGPTProvider(name={self.name!r}, app={self.app!r})"

    def serves(self, model: str) -> bool:
        return self.app.serves(model)

    def served_names(self, model: str) -> list[str]:
        return [model]

    def speaks(self, endpoint: Endpoint) -> bool:
        return endpoint is Endpoint.RESPONSES

    def model_names(self) -> list[str]:
        return self.app.model_names()

    @property
    def listed(self) -> list[str]:
        return self.app.model_names()

    @property
    def discovered(self) -> ModelPatterns:
        return ModelPatterns(self.listed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
