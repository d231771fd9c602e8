"""Credential redaction for URLs and for any text that might quote one.

Every place that prints, logs or publishes a Redis URL (or an error message that might
echo one) passes it through here first:

* ``redact_url(url)``: the userinfo of ``scheme://user:password@host...`` becomes ``***``
  (``redis://***@host:6379/0``), and ``password=`` / ``username=`` / ``user=`` query values
  become ``***`` (``unix:///run/r.sock?password=***``). Scheme, host, port, path and db
  stay visible so that an operator can tell which server is meant.
* ``secrets_of(url)``: the credential strings of a URL (password, username), raw and
  percent-decoded.
* ``scrub(text, *urls)``: ``text`` with every URL in it redacted and every credential of
  the given URLs replaced by ``***`` (for exception messages of client libraries).
"""
from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# scheme://userinfo@rest  (userinfo: anything up to the last '@' before the path)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|username|user|auth|token)=)"
                           r"(?P<value>[^&#\s]*)")


def redact_url(url: str | None) -> str:
    """``url`` with its credentials masked (``""`` stays ``""``)."""
    if not url:
        return ""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}" if m["value"] else m[0], out)


def secrets_of(url: str | None) -> list[str]:
    """The credential strings in ``url`` (longest first; raw and percent-decoded).
    Passwords always; user names of 3+ characters (shorter ones would mangle text)."""
    if not url:
        return []
    found: list[str] = []
    m = _USERINFO.search(url)
    if m:
        user, colon, password = m["userinfo"].partition(":")
        if colon:
            found.append(password)
        if len(user) >= 3:
            found.append(user)
    for q in _QUERY_SECRET.finditer(url):
        if q["key"].lower().startswith(("?user", "&user", ";user")) and len(q["value"]) < 3:
            continue
        found.append(q["value"])
    out = {v for s in found for v in (s, unquote(s)) if v}
    return sorted(out, key=len, reverse=True)


def scrub(text, *urls: str | None) -> str:
    """``str(text)`` with every URL redacted and every credential of ``urls`` masked."""
    s = redact_url(str(text))
    for url in urls:
        for secret in secrets_of(url):
            s = s.replace(secret, MASK)
    return s
