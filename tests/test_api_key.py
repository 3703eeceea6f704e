"""The service's key rules without a server: where the key is accepted, the cookie token, redaction."""

from search.api_key import PAGE_COOKIE, KeyGuard, page_token, redact_api_key

KEY = "s3cret-key-1234"


def test_redaction_replaces_every_api_key_value_and_nothing_else():
    assert redact_api_key(f"GET /?q=cat&api_key={KEY}&k=3 HTTP/1.1") == "GET /?q=cat&api_key=[redacted]&k=3 HTTP/1.1"
    assert redact_api_key(f"/x?API_KEY={KEY}") == "/x?API_KEY=[redacted]"
    assert redact_api_key("/?q=my_api_key=1") == "/?q=my_api_key=1"  # part of a query's text, not a parameter
    assert redact_api_key("/?q=cat") == "/?q=cat"


def test_the_cookie_token_is_derived_and_not_the_key():
    token = page_token(KEY)
    assert token != KEY and KEY not in token and len(token) == 64 and token == page_token(KEY) and token != page_token(KEY + "x")


def test_where_each_route_accepts_the_key():
    guard = KeyGuard(KEY)
    header = {"x-api-key": KEY}
    assert guard.check("GET", "/api/health", header, {}, {}).allowed
    assert guard.check("GET", "/api/health", {"authorization": f"Bearer {KEY}"}, {}, {}).allowed
    assert not guard.check("GET", "/api/health", {}, {PAGE_COOKIE: page_token(KEY)}, {}).allowed
    assert not guard.check("GET", "/api/health", header, {}, {"api_key": KEY.encode()}).allowed
    assert guard.check("GET", "/", {}, {PAGE_COOKIE: page_token(KEY)}, {}).allowed
    assert not guard.check("GET", "/", {}, {PAGE_COOKIE: KEY}, {}).allowed
    redirected = guard.check("GET", "/", {}, {}, {"q": "caf\xc3\xa9".encode("latin-1"), "api_key": KEY.encode()}, "/")
    assert redirected.allowed and redirected.redirect_to == "/?q=caf%C3%A9"
    assert not guard.check("POST", "/", {}, {}, {"api_key": KEY.encode()}).allowed
    assert guard.check("GET", "//evil.example", {}, {}, {"api_key": KEY.encode()}).redirect_to == "/evil.example"
