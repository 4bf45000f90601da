"""Where a login or logout may send the browser when it finishes: the open-redirect defence.

The target arrives in the query string, so an attacker chooses it. Browsers read URLs more
loosely than ``urllib.parse`` does: they drop tabs and newlines anywhere in a URL, treat ``\\``
as ``/`` in http(s) URLs, resolve ``//host`` against the current scheme and map full-width
characters in host names. So this module checks the raw string's shape itself, rebuilds the
result from the allowed origin it matched, and uses ``urlsplit`` only as a last cross-check.

A target is accepted when it is

- empty or missing: ``default`` (itself checked like any other target);
- a path on our own origin: ``/``, or ``/`` followed by anything but ``/`` or ``\\``;
- an absolute ``http(s)://host[:port]`` URL whose origin is ``public_url``'s or an allowed one,
  compared exactly after lower-casing ASCII letters and dropping the scheme's default port;

and in every case the path, decoded up to three times (and NFKC-normalised), must not start
with ``//``, hold a ``\\``, a ``.`` or ``..`` segment or any control character.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit

from login_app.errors import RedirectRejected

MAX_TARGET_LENGTH = 2048
# An honest target is encoded at most twice (a URL nested in a query string); more layers only
# serve to slip an encoded "//" past a decoder.
_MAX_DECODE_ROUNDS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Anything starting like this is an absolute URL to a browser (RFC 3986 section 3.1).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_HTTP_URL = re.compile(r"(https?)://([^/?#]*)(.*)", re.IGNORECASE | re.DOTALL)
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+)(?::([0-9]{1,5}))?")
# Never part of an honest target: controls, format characters (zero-width spaces, BOM, bidi
# overrides), surrogates, private use, unassigned code points and every kind of space.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Once decoded, an encoded space or letter is harmless; an encoded control or line break is not.
_FORBIDDEN_DECODED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# RFC 3986 reserved and unreserved characters plus "%"; anything else is escaped in the result.
_URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
# Only ASCII is case-folded: str.lower() also folds e.g. the Kelvin sign into "k".
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def safe_redirect_target(
    value: str | None,
    *,
    public_url: str,
    allowed_origins: frozenset[str] | tuple[str, ...],
    default: str = "/",
) -> str:
    """The absolute URL on an allowed origin that ``value`` names, or raise RedirectRejected."""
    public_origin, allowed = _allowed_origins(public_url, allowed_origins)
    target = default if value is None or value == "" else value
    if not isinstance(target, str):
        raise RedirectRejected("The return address must be text.")
    if len(target) > MAX_TARGET_LENGTH:
        raise RedirectRejected("The return address is too long.")
    if _has_any(target, _FORBIDDEN_CATEGORIES) or any(c.isspace() for c in target):
        raise RedirectRejected("The return address contains whitespace or control characters.")
    if "\\" in target:
        raise RedirectRejected("The return address contains a backslash.")

    if target.startswith("/"):
        origin, rest = public_origin, target
    elif scheme_match := _SCHEME.match(target):
        if scheme_match.group()[:-1].lower() not in _DEFAULT_PORTS:
            raise RedirectRejected("Only http and https return addresses are allowed.")
        url_match = _HTTP_URL.fullmatch(target)
        if url_match is None:
            raise RedirectRejected("The return address must look like https://host/path.")
        origin = _origin(url_match[1].lower(), url_match[2])
        if origin not in allowed:
            raise RedirectRejected("The return address points to a site we do not send you to.")
        rest = url_match[3] if url_match[3].startswith("/") else "/" + url_match[3]
    else:
        raise RedirectRejected("The return address must be a path on this site or a full URL.")

    path, tail = _split_path(rest)
    _check_path(path)
    for form in _decoded_forms(tail):
        _check_decoded_characters(form)

    result = origin + "".join(c if c in _URL_CHARACTERS else quote(c, safe="") for c in rest)
    # Belt and braces: whatever the checks above missed, never hand out another netloc.
    parts = urlsplit(result)
    if f"{parts.scheme}://{parts.netloc}" not in allowed:
        raise RedirectRejected("The return address points to a site we do not send you to.")
    return result


@lru_cache(maxsize=16)
def _allowed_origins(
    public_url: str, allowed_origins: frozenset[str] | tuple[str, ...]
) -> tuple[str, frozenset[str]]:
    public_origin = _configured_origin(public_url)
    return public_origin, frozenset({public_origin, *map(_configured_origin, allowed_origins)})


def _configured_origin(url: str) -> str:
    # The configuration validated these already; a bad one here is a programming error.
    match = _HTTP_URL.fullmatch(url)
    if match is None or match[3] not in ("", "/"):
        raise ValueError(f"{url!r} is not an http(s) origin")
    try:
        return _origin(match[1].lower(), match[2])
    except RedirectRejected as exc:
        raise ValueError(f"{url!r} is not an http(s) origin: {exc}") from exc


def _origin(scheme: str, authority: str) -> str:
    """``scheme://host[:port]`` with ASCII lower-cased and the default port dropped."""
    if "@" in authority:
        raise RedirectRejected("The return address must not carry a user name or password.")
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        raise RedirectRejected("The return address has a malformed host or port.")
    default_port = _DEFAULT_PORTS[scheme]
    port = int(match[2]) if match[2] else default_port
    if port > 65535:
        raise RedirectRejected("The return address has a malformed host or port.")
    host = match[1].translate(_ASCII_LOWER)
    return f"{scheme}://{host}" + ("" if port == default_port else f":{port}")


def _split_path(rest: str) -> tuple[str, str]:
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def _check_path(path: str) -> None:
    for form in _decoded_forms(path):
        if form.startswith("//"):
            raise RedirectRejected("The return address's path looks like another site's address.")
        if "\\" in form:
            raise RedirectRejected("The return address contains a backslash.")
        # Resolving "/.//evil" or "/a/..//evil" leaves a path that starts with "//".
        if any(segment in (".", "..") for segment in form.split("/")):
            raise RedirectRejected("The return address's path must not hold '.' or '..' parts.")
        _check_decoded_characters(form)


def _decoded_forms(text: str) -> list[str]:
    """``text``, each successive percent-decoding of it, and the NFKC form of each."""
    forms = [text]
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    else:
        if unquote(forms[-1]) != forms[-1]:
            raise RedirectRejected("The return address is percent-encoded too many times.")
    # Full-width "／" and "．" become "/" and "." under NFKC, which some software applies.
    return forms + [unicodedata.normalize("NFKC", form) for form in forms]


def _check_decoded_characters(form: str) -> None:
    if _has_any(form, _FORBIDDEN_DECODED_CATEGORIES):
        raise RedirectRejected("The return address hides control characters in its encoding.")


def _has_any(text: str, categories: frozenset[str]) -> bool:
    return any(unicodedata.category(character) in categories for character in text)
