"""Stack ampbridge's middlewares around an app of your own.

``LocalhostOnly`` keeps the app to clients on this machine (judged by the TCP peer, never by
forwarding headers); ``GzipUnwrap`` repairs gzip bodies sent without ``Content-Encoding``.

Run:  uvicorn examples.stack_middlewares:app --no-proxy-headers
"""

from __future__ import annotations

import gzip

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ampbridge import GzipUnwrap, LocalhostOnly


async def report(request: Request) -> Response:
    # A backend that gzips its body but forgets to say so.
    return Response(gzip.compress(b'{"status": "fine"}'), media_type="application/json")


inner = Starlette(routes=[Route("/report", report)])

app = LocalhostOnly(GzipUnwrap(inner, max_decoded_size=1024 * 1024))
