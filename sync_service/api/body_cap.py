"""Request bodies are capped before they are buffered. FastAPI reads a route's whole body
before it resolves any dependency, token checks included, so without a cap anyone could make
a replica hold a body of any size (a 200 MiB registration body cost 200 MiB, then a 401).

Pure ASGI, outside the routing: a declared ``Content-Length`` over the cap is answered 413 at
once, unread; a body that grows past it while it is read stops there (an HTTPException that
FastAPI re-raises from its body parsing, answered by sync_service/api/errors.py). Bundle
uploads stream to disk under their own, larger cap (routes/bundles.py) and are left alone.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_service.api.errors import error_response
from sync_service.errors import PayloadTooLarge
from sync_service.transfer import byte_position

# A full report batch (500 events with their data) is well under 1 MiB.
BODY_MAX = 4 * 1024 * 1024
STREAMED = frozenset({"/v1/bundles"})


class BodyCap:
    def __init__(self, app: ASGIApp, cap: int = BODY_MAX, streamed: frozenset[str] = STREAMED) -> None:
        self.app = app
        self.cap = cap
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.streamed:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and byte_position(value.decode()) > self.cap:
                answer = error_response(413, self._detail(), PayloadTooLarge.code)
                await answer(scope, receive, send)
                return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.cap:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, capped, send)

    def _detail(self) -> str:
        return f"request body over the {self.cap}-byte cap"
