r"""Where the search service accepts its API key, and how it keeps the key out of sight.

- **The JSON API** (``/api/...``) takes the key in a header only: ``Authorization: Bearer KEY``
  or ``X-API-Key: KEY``. A key in its URL is refused (URLs end up in access logs, proxies and
  shell history), and so is the page's cookie (a script on another tab cannot ride on it).
- **The page and its images** also take a cookie. A browser gets it by opening any page URL with
  ``?api_key=KEY`` once: that request is answered with a 303 redirect to the same URL without
  the parameter, so the key leaves the address bar and the history at once. The cookie holds a
  token derived from the key (HMAC-SHA256 of a fixed label under the key), never the key itself:
  a stolen cookie opens the page but does not give the key the API takes.
- **Every comparison is constant-time** (``hmac.compare_digest`` on bytes).
- **Logs**: ``redact_api_key`` replaces the value of every URL parameter whose *decoded* name is
  ``api_key`` (``api%5Fkey=`` and ``API_KEY=`` too, since the guard decodes names before it compares);
  the service runs every log line through it and through ``KeyScrubber``, which also removes the key
  itself wherever it appears (search/serve.py).
- **Redirects** go to a path on this host only (``safe_local_path``): a path that begins ``//`` or
  ``/\`` would be read by a browser as another host.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import Response

KEY_PARAMETER = "api_key"
PAGE_COOKIE = "search_session"
_TOKEN_LABEL = b"clip4clip-stream search page cookie v1"
_PARAMETER = re.compile(r"((?:^|[?&;\s\"'])([^=&;?\s\"']+)=)([^&;\s\"']*)")
REDACTED = "[redacted]"
HEADER_HINT = "header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


def _decoded_name(name: str) -> str:
    """A parameter's name as a server would read it, however many times it was percent-encoded."""
    for _ in range(4):
        decoded = urllib.parse.unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.lower()


def redact_api_key(text: str) -> str:
    """``text`` with the value of every parameter whose decoded name is ``api_key`` replaced by ``[redacted]``."""
    if "=" not in text:
        return text

    def replace(match: re.Match) -> str:
        return match.group(1) + REDACTED if _decoded_name(match.group(2)) == KEY_PARAMETER else match.group(0)

    return _PARAMETER.sub(replace, text)


class KeyScrubber:
    """Removes one secret from text: the key as given, and percent-encoded as a URL would carry it."""

    def __init__(self, secret: str) -> None:
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret, safe="")}
        self._pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text)


def safe_local_path(raw_path: str) -> str:
    """A path to redirect to that a browser can only read as a path on this host: every character a URL
    path may not hold bare is percent-encoded (a backslash, which browsers read as ``/``, tabs and
    newlines, which they drop, included; escapes already there are kept), and leading slashes are one."""
    quoted = urllib.parse.quote(raw_path, safe="/%:@!$&'()*+,;=-._~")
    return "/" + quoted.lstrip("/")


def page_token(api_key: str) -> str:
    """What the page's cookie holds: derived from the key, and the key cannot be read back from it."""
    return hmac.new(api_key.encode("utf-8"), _TOKEN_LABEL, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def header_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get("x-api-key")


@dataclass(frozen=True)
class KeyCheck:
    """The guard's answer for one request: let it through, refuse it (with the reason), or redirect."""

    allowed: bool
    refusal: str = ""
    redirect_to: str | None = None  # the same URL without api_key; the answer also sets the page cookie


class KeyGuard:
    """Decides, per request, whether the key was given where that route accepts it."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key
        self._token = page_token(api_key)

    def check(self, method: str, path: str, headers: Mapping[str, str], cookies: Mapping[str, str],
              parameters: Mapping[str, bytes], raw_path: str | None = None) -> KeyCheck:  # fmt: skip
        """``path`` decoded (to tell the API from the page), ``raw_path`` as sent (to redirect to the same URL)."""
        is_api = path.startswith("/api/")
        in_url = parameters.get(KEY_PARAMETER)
        if is_api and in_url is not None:
            return KeyCheck(False, f"the JSON API takes its key in a header only ({HEADER_HINT}), never in the URL")
        given = header_key(headers)
        if given is not None:
            return KeyCheck(True) if _same(given, self._key) else KeyCheck(False, f"wrong API key in the header ({HEADER_HINT})")
        if in_url is not None:
            if method != "GET" or not _same(in_url.decode("latin-1"), self._key):
                return KeyCheck(False, "wrong API key in ?api_key=")
            return KeyCheck(True, redirect_to=_without_key(raw_path or path, parameters))
        cookie = cookies.get(PAGE_COOKIE)
        if cookie is not None and not is_api and _same(cookie, self._token):
            return KeyCheck(True)
        where = HEADER_HINT if is_api else f"{HEADER_HINT}, or open this page once with ?api_key=KEY"
        return KeyCheck(False, f"this service needs its API key: {where}")

    def set_cookie(self, response: Response) -> None:
        response.set_cookie(PAGE_COOKIE, self._token, httponly=True, samesite="strict", path="/")


def _without_key(path: str, parameters: Mapping[str, bytes]) -> str:
    """The request's own path and parameters, less ``api_key`` (a relative URL: never another host)."""
    kept = [(name, value) for name, value in parameters.items() if name != KEY_PARAMETER]
    query = urllib.parse.urlencode([(name, value.decode("latin-1")) for name, value in kept], encoding="latin-1")
    return safe_local_path(path) + (f"?{query}" if query else "")
