"""The ASGI glue: a ``send`` wrapper that passes a backend's reply through a
:class:`ReplyTranslator` on its way to the client, fixing content type and length."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Send

from ampbridge.translate.reply import ReplyTranslator


class TranslatingSend:
    """Wraps ``send`` for one call. A backend SSE reply is translated as it arrives (and sent at
    once when the client asked for a stream); a JSON reply or an error is collected, translated
    whole, and sent with its new length."""

    def __init__(self, send: Send, translator: ReplyTranslator) -> None:
        self.send = send
        self.translator = translator
        self._start: Message | None = None
        self._mode = ""  # "sse", "json" or "error"
        self._held: list[bytes] = []

    async def _send_start(self, length: int | None, status: int | None = None) -> None:
        start = self._start
        if start is None:
            return
        self._start = None
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        del headers["content-length"]
        del headers["content-encoding"]
        headers["content-type"] = "application/json" if self._mode == "error" else self.translator.media_type
        if length is not None:
            headers["content-length"] = str(length)
        await self.send({**start, "status": status or start["status"], "headers": headers.raw})

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            content_type = MutableHeaders(raw=list(message.get("headers", []))).get("content-type", "")
            status = int(message["status"])
            self._mode = "error" if status >= 400 else "sse" if "event-stream" in content_type else "json"
            if self._mode == "sse" and self.translator.stream:
                await self._send_start(None)
            return
        if kind != "http.response.body":
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._mode == "sse":
            out = self.translator.feed(body) + (b"" if more else self.translator.finish())
            if self.translator.stream:
                if out or not more:
                    await self.send({"type": "http.response.body", "body": out, "more_body": more})
                return
            self._held.append(out)
            if not more:
                await self._send_whole(b"".join(self._held), 502 if self.translator.failed else None)
            return
        self._held.append(body)
        if more:
            return
        await self._translate_held(b"".join(self._held))

    async def _translate_held(self, raw: bytes) -> None:
        status = self._start["status"] if self._start else 502
        if self._mode == "error":
            await self._send_whole(self.translator.translate_error(status, raw))
            return
        out = self.translator.translate_json(raw)
        failed = self.translator.failed and not self.translator.stream
        if self.translator.stream:
            await self._send_start(None)
            await self.send({"type": "http.response.body", "body": out, "more_body": False})
        else:
            await self._send_whole(out, 502 if failed else None)

    async def _send_whole(self, body: bytes, status: int | None = None) -> None:
        await self._send_start(len(body), status)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
