"""Request bodies bounded by the bytes received, whatever the headers say (an ASGI middleware).

A limit checked only against ``Content-Length`` is a limit the client chooses: with
``Transfer-Encoding: chunked`` beside it, the server reads the chunked body and ignores the declared
length, so a 1,000-byte declaration carried 100 MB. Here every body is counted as it arrives:

- A request with both ``Content-Length`` and ``Transfer-Encoding`` is refused (400) before anything
  is read: RFC 9112 section 6.3 calls it a request smuggling attempt a server ought to reject.
- A declared length over the route's limit is refused (413) before anything is read; a route that
  needs a length (a file upload) refuses a body without one (411).
- While the body arrives, bytes past the route's limit (413) or past the declared length (400)
  stop the read at once, and so does a body that takes longer than ``read_timeout_s`` (408). The
  refusal is raised from ``receive`` into the route, whose handler answers with ``Connection:
  close``, so the rest of the body is never read.
- A route that takes no body takes none: its limit is 0.

Nothing here buffers: the route reads the body as it would without this middleware.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class PayloadRefused(ValueError):
    """A body refused from its headers or as it arrived: status (400, 408, 411 or 413) and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BodyRule:
    """What one route accepts: at most ``limit`` bytes of ``what``; ``needs_length``: refuse a body of unknown length."""

    limit: int
    what: str = "body"
    needs_length: bool = False


NO_BODY = BodyRule(0, "body")
Refuse = Callable[[Scope, PayloadRefused], Awaitable[Callable[[Scope, Receive, Send], Awaitable[None]]]]


def declared_length(scope: Scope) -> tuple[int | None, bool]:
    """(the body's declared length or None, whether the request also names a transfer coding); PayloadRefused
    for a length that is not one number (two different Content-Length headers included)."""
    lengths = {value.strip() for name, value in scope.get("headers", []) if name.lower() == b"content-length"}
    coded = any(name.lower() == b"transfer-encoding" for name, _ in scope.get("headers", []))
    if not lengths:
        return None, coded
    if len(lengths) > 1 or not all(value.isdigit() for value in lengths):
        raise PayloadRefused(400, "the request's Content-Length is not one whole number")
    return int(lengths.pop()), coded


class BodyLimits:
    """The ASGI middleware: ``rule_for(method, path)`` says what each route takes; ``refuse`` makes the answer
    to a request refused before the app sees it (JSON or a page, as the app's own errors are)."""

    def __init__(self, app: ASGIApp, rule_for: Callable[[str, str], BodyRule], refuse: Refuse, read_timeout_s: float) -> None:
        self.app, self.rule_for, self.refuse, self.read_timeout_s = app, rule_for, refuse, read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope["method"], scope["path"])
        try:
            declared = self._check_headers(scope, rule)
        except PayloadRefused as refusal:
            response = await self.refuse(scope, refusal)
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive, rule, declared), send)

    @staticmethod
    def _check_headers(scope: Scope, rule: BodyRule) -> int | None:
        declared, coded = declared_length(scope)
        if coded and declared is not None:
            raise PayloadRefused(400, "the request sends both Content-Length and Transfer-Encoding (RFC 9112 section 6.3): send one")
        if declared is not None and declared > rule.limit:
            if rule.limit == 0:
                raise PayloadRefused(413, f"{scope['method']} {scope['path'][:100]} takes no body")
            raise PayloadRefused(413, f"the {rule.what} is {declared:,} bytes; this service takes at most {rule.limit:,}")
        if coded and rule.needs_length:
            raise PayloadRefused(411, f"send the {rule.what} with a Content-Length header (at most {rule.limit:,} bytes)")
        return declared

    def _counting(self, receive: Receive, rule: BodyRule, declared: int | None) -> Receive:
        """``receive`` that counts body bytes and keeps the read's deadline until the body is complete."""
        received = 0
        complete = False
        deadline = time.monotonic() + self.read_timeout_s

        async def counted() -> Message:
            nonlocal received, complete
            if complete:  # only the disconnect is left to wait for: no deadline on that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise PayloadRefused(408, f"the {rule.what} did not arrive within {self.read_timeout_s:g} s") from None
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > rule.limit:
                if rule.limit == 0:
                    raise PayloadRefused(413, "this route takes no body")
                raise PayloadRefused(413, f"the {rule.what} is over this service's limit of {rule.limit:,} bytes")
            if declared is not None and received > declared:
                raise PayloadRefused(400, f"the {rule.what} is longer than its Content-Length of {declared:,} bytes")
            return message

        return counted
