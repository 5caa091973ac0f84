"""Secrets never leave the process: :func:`redact` is the one function every message, log line,
exception text shown to a user, printed config, MLflow param / tag and written manifest goes
through.

It removes, from any text, dict or list:

- credentials in a URI of any scheme, chained fsspec URLs included
  (``simplecache::s3://KEY:SECRET@bucket`` -> ``simplecache::s3://***@bucket``), and a bare
  ``KEY:SECRET@bucket`` (botocore repeats the bucket name s3fs parsed from such a URI);
- secret query / connection-string parameters: ``?sig=`` (Azure SAS), ``X-Amz-Signature``,
  ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``AccountKey=``, ``token=``, ``password=`` ...;
- values under secret-named keys (key, secret, token, password, connection_string,
  Authorization, ...), in mappings (nested ones too) and in the text of a dict's repr;
- every literal secret :func:`remember` was shown (the config's storage options and URIs, the
  command line): a library may print a secret in a form no pattern foresees.

Over-redaction is accepted (``s3://bucket/x@2x.png`` loses its path); a leak is not.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

REDACTED = "***"

# A key whose value is a secret contains one of these (case-insensitive) ...
_SECRET_PARTS = ("secret", "password", "passwd", "token", "credential", "signature", "authorization",
                 "connection_string", "connectionstring", "accountkey", "account_key", "access_key",
                 "sas", "cookie", "private", "session")
# ... or is one of these exactly, or ends with _key / -key / key.
_SECRET_NAMES = {"key", "sig", "pwd", "pass", "auth", "apikey", "client_secret"}
# Names that look secret but are not (fsspec / botocore option names).
_NOT_SECRET = {"key_prefix", "endpoint_url", "region_name", "anon", "use_ssl", "session_name", "keys",
               "cache_key"}

_WORDS = r"(?:secret|passw(?:or)?d|token|credential|signature|authorization|connection_?string|" \
         r"account_?key|access_?key|apikey|api_key|sas|sig|pwd|key|auth|cookie|session)"
# scheme://userinfo@ anywhere in a text (AWS secrets may hold '/': userinfo runs to the '@').
_URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^@\s'\"<>]+)@")
# A bare user:secret@host (what botocore prints back as an "invalid bucket name").
_BARE_USERINFO = re.compile(r"(?<![\w/:.+%~-])[\w.+%~-]+:(?:(?!//)[^\s@'\"<>])+@")
# name=value in a query string, a connection string or a message.
_ASSIGN = re.compile(r"(?i)(\b[\w.-]*" + _WORDS + r"[\w.-]*\s*=\s*)([^\s&;,'\"<>)}\]]+)")
# 'name': 'value' (a dict's repr, JSON).
_QUOTED = re.compile(r"(?i)((['\"])[^'\"\n]*" + _WORDS + r"[^'\"\n]*\2\s*:\s*)(?:(['\"])(.*?)\3|([^\s,}\]]+))")
# An HTTP header line: Authorization: Bearer abc
_HEADER = re.compile(r"(?i)(\b(?:authorization|x-amz-security-token|x-ms-[\w-]*key)\s*:\s*)"
                     r"((?:bearer|basic|aws4-hmac-sha256|sharedkey)\s+)?[^\s,'\"]+")

# AWS access key ids have a recognisable shape.
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{12,}\b")

_known: set[str] = set()  # literal secrets, see remember()
_MIN_LITERAL = 4  # shorter values would redact ordinary words


def is_secret_name(name: Any) -> bool:
    """Whether a mapping key names a secret (storage option, header, query parameter)."""
    low = str(name).lower().replace("-", "_")
    if low in _NOT_SECRET:
        return False
    return low in _SECRET_NAMES or low.endswith(("_key", "key")) or any(p in low for p in _SECRET_PARTS)


def remember(value: Any) -> None:
    """Learn the literal secrets in a value (a config dict, a URI, argv) so that :func:`redact`
    removes them from any text, in whatever form a library prints them (raw or %-encoded)."""
    for secret in _find_secrets(value):
        for form in {secret, unquote(secret), quote(secret, safe="")}:
            # Its pieces too: s3fs cuts ``KEY:SE/CRET@bucket`` at the '/' and botocore prints
            # ``KEY:SE`` back as a bucket name; an access key id may be printed alone.
            for piece in {form, *form.split("/"), *form.split(":", 1)}:
                if len(piece) >= _MIN_LITERAL:
                    _known.add(piece)


def _find_secrets(value: Any, secret_key: bool = False) -> Iterable[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _find_secrets(v, secret_key or is_secret_name(k))
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _find_secrets(v, secret_key)
    elif isinstance(value, str):
        if secret_key:
            yield value
        for m in _URI_USERINFO.finditer(value):
            yield m.group("user")
            if ":" in m.group("user"):
                yield m.group("user").split(":", 1)[1]
        for m in _BARE_USERINFO.finditer(value):
            yield m.group(0)[:-1]
        for m in _ASSIGN.finditer(value):
            yield m.group(2)
    elif secret_key and isinstance(value, (bytes, int)) and not isinstance(value, bool):
        yield str(value)


def redact_text(text: str) -> str:
    text = _AWS_KEY_ID.sub(REDACTED, text)
    text = _URI_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _BARE_USERINFO.sub(f"{REDACTED}@", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}{REDACTED}", text)
    text = _QUOTED.sub(lambda m: f"{m.group(1)}{m.group(3) or ''}{REDACTED}{m.group(3) or ''}", text)
    text = _ASSIGN.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` safe to show: text, mappings (secret-named keys' values replaced,
    nested too) and lists; other values unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_name(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain (Ray's wrappers keep theirs in ``.cause``)."""
    seen: set[int] = set()
    cur = e
    while id(cur) not in seen:
        seen.add(id(cur))
        nxt = getattr(cur, "cause", None) or cur.__cause__
        if not isinstance(nxt, BaseException):
            break
        cur = nxt
    return cur


def describe(e: BaseException, limit: int = 400) -> str:
    """One redacted line for an exception: ``Type: first line of its message``."""
    if getattr(type(e), "user_facing", False):  # a complete message of the project's own
        return redact_text(str(e))
    inner = root_cause(e)
    if getattr(type(inner), "user_facing", False):
        return redact_text(str(inner))
    msg = " ".join(ln.strip() for ln in str(inner).splitlines() if ln.strip())
    name = type(inner).__name__
    text = f"{name}: {msg}" if msg else name
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redacted_traceback(e: BaseException) -> str:
    return redact_text("".join(traceback.format_exception(type(e), e, e.__traceback__)))
