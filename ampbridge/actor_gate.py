"""``ActorGate``: client keys on Amp's thread-actor gateway (``/actors/*``), SPEC §11.

Native Amp CLIs send no ``Authorization`` there: their credential is the ``wsToken`` (or, on the
executor connection, their own Amp key as ``apiKey``) inside the conn params. With client keys
configured, a request is admitted by a client key (in a header, or as the conn params' ``apiKey``)
or by a ``wsToken``. A request admitted by its token alone is marked so that no Amp key is added
upstream: the token, minted by the upstream, is its credential there, and the upstream judges it.
No state is kept, so admission holds across workers and instances.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from . import scope_keys
from .actors import AdmittedBy, admit_actor_request
from .client_keys import ClientKeys
from .credentials import presented_keys
from .errors import refuse


class ActorGate:
    def __init__(self, app: ASGIApp, *, keys: ClientKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header_key = self.keys.match(presented_keys(scope))
        admission = admit_actor_request(scope, header_key=header_key, client_keys=self.keys.texts)
        if admission.by is AdmittedBy.CLIENT_KEY:
            await self.app({**scope, scope_keys.CLIENT_KEY: admission.client_key}, receive, send)
        elif admission.by is AdmittedBy.WS_TOKEN:
            await self.app({**scope, scope_keys.ACTOR_TOKEN_ONLY: True}, receive, send)
        else:
            await refuse(scope, receive, send, 401, "unauthorized", "Missing or invalid API key")
