"""What a search accepts as a query, in one place for the command line and the web page.

A query is text a person typed: valid UTF-8, not empty, without control characters, and at
most ``MAX_QUERY_CHARS`` long (the text encoder reads only its first ``max_words`` tokens, so a
page of text would be silently cut; saying so is clearer than ranking by its first line).
"""

from __future__ import annotations

import unicodedata

MAX_QUERY_CHARS = 1000
ALLOWED_CONTROL = "\t\n\r"


class QueryError(ValueError):
    """A query that cannot be searched; the message says why, for the person who typed it."""


def check_query(query: str | bytes) -> str:
    """The query, whitespace-trimmed, or QueryError with the reason."""
    if isinstance(query, bytes):
        try:
            query = query.decode("utf-8")
        except UnicodeDecodeError as error:
            raise QueryError(f"the query is not UTF-8 text (byte {error.start} is 0x{query[error.start]:02x}): type words, not binary data") from error
    text = query.strip()
    if not text:
        raise QueryError("the query is empty: describe the video, e.g. 'a man is cooking pasta'")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query has {len(text):,} characters; the limit is {MAX_QUERY_CHARS:,} (the model reads only its first few dozen words)")
    odd = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in ALLOWED_CONTROL), None)
    if odd is not None:
        raise QueryError(f"the query contains the control character U+{ord(odd):04X}: type words, not binary data")
    return text
