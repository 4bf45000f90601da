"""The open-redirect defence: where a login or logout may send the browser afterwards.

``OPEN_REDIRECT_PAYLOADS`` (with ``OPEN_REDIRECT_PAYLOAD_IDS``) is reused by integration tests
that send each payload through the real login app; every one must be rejected there too, given
``public_url = PUBLIC_URL`` and ``allowed_redirect_origins = ALLOWED_ORIGINS``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from login_app.errors import RedirectRejected
from login_app.redirects import MAX_TARGET_LENGTH, safe_redirect_target

PUBLIC_URL = "https://public.example"
ALLOWED_ORIGINS = frozenset({"https://renku.example.org", "http://localhost:8080"})


def target(value: str | None, **overrides: object) -> str:
    """``safe_redirect_target`` with this module's public URL and allowed origins."""
    arguments: dict[str, object] = {"public_url": PUBLIC_URL, "allowed_origins": ALLOWED_ORIGINS}
    arguments.update(overrides)
    return safe_redirect_target(value, **arguments)  # type: ignore[arg-type]


# (id, payload). Each must be rejected with PUBLIC_URL and ALLOWED_ORIGINS above.
_NAMED_PAYLOADS: list[tuple[str, str]] = [
    # -- protocol-relative and slash/backslash shapes (browsers read "\" as "/") --------------
    ("protocol-relative", "//evil.com"),
    ("triple-slash", "///evil.com"),
    ("quadruple-slash", "////evil.com"),
    ("slash-backslash", "/\\evil.com"),
    ("double-backslash", "\\\\evil.com"),
    ("backslash-slash", "\\/evil.com"),
    ("slash-backslash-slash", "/\\/evil.com"),
    ("backslash-in-later-segment", "/projects\\..\\\\evil.com"),
    ("protocol-relative-userinfo", "//public.example@evil.com"),
    ("dot-segment-then-double-slash", "/.//evil.com"),
    ("dotdot-segment-then-double-slash", "/..//evil.com"),
    ("dotdot-climbing-to-double-slash", "/a/../..//evil.com"),
    ("encoded-dotdot-then-double-slash", "/%2e%2e//evil.com"),
    ("trailing-dot-segment", "/projects/."),
    # -- percent-encoded shapes ------------------------------------------------------------
    ("encoded-double-slash", "/%2F%2Fevil.com"),
    ("encoded-double-slash-lowercase", "/%2f%2fevil.com"),
    ("encoded-single-slash", "/%2Fevil.com"),
    ("encoded-backslash", "/%5Cevil.com"),
    ("encoded-backslash-lowercase", "/%5cevil.com"),
    ("encoded-backslash-later", "/projects/%5C..%5Cevil"),
    ("double-encoded-double-slash", "/%252F%252Fevil.com"),
    ("double-encoded-backslash", "/%255Cevil.com"),
    ("triple-encoded-double-slash", "/%25252F%25252Fevil.com"),
    ("quadruple-encoded-slash", "/%2525252F"),
    ("encoded-without-leading-slash", "%2F%2Fevil.com"),
    ("double-encoded-without-leading-slash", "%252F%252Fevil.com"),
    ("encoded-tab-then-slash", "/%09/evil.com"),
    ("encoded-crlf-header-injection", "/%0d%0aLocation:%20https://evil.com"),
    ("encoded-crlf-in-query", "/?next=%0D%0ASet-Cookie:x=1"),
    ("encoded-nul", "/%00/evil.com"),
    ("encoded-line-separator", "/%E2%80%A8/evil.com"),
    ("encoded-zero-width-space", "/%E2%80%8B/evil.com"),
    ("double-encoded-crlf", "/%250d%250a"),
    # -- raw whitespace, control and invisible characters ------------------------------------
    ("tab-between-slashes", "/\t/evil.com"),
    ("newline-between-slashes", "/\n/evil.com"),
    ("crlf-header-injection", "/\r\nLocation: https://evil.com"),
    ("nul-between-slashes", "/\x00/evil.com"),
    ("del-between-slashes", "/\x7f/evil.com"),
    ("next-line-between-slashes", "/\x85/evil.com"),
    ("leading-tab-protocol-relative", "\t//evil.com"),
    ("leading-space-protocol-relative", " //evil.com"),
    ("space-inside-path", "/a b"),
    ("line-separator", "/\u2028/evil.com"),
    ("paragraph-separator", "/\u2029/evil.com"),
    ("zero-width-space", "/\u200b/evil.com"),
    ("byte-order-mark", "\ufeff//evil.com"),
    ("no-break-space", "/\u00a0/evil.com"),
    ("ideographic-space", "/\u3000/evil.com"),
    ("right-to-left-override", "/\u202e/moc.live"),
    ("soft-hyphen-in-host", "https://public\u00ad.example/"),
    ("tab-inside-host", "https://public.exa\tmple/"),
    ("newline-before-userinfo", "https://public.example\n@evil.com"),
    # -- unicode look-alikes ---------------------------------------------------------------
    ("fullwidth-double-solidus", "\uff0f\uff0fevil.com"),
    ("slash-then-fullwidth-solidus", "/\uff0fevil.com"),
    ("fullwidth-double-backslash", "\uff3c\uff3cevil.com"),
    ("fullwidth-dots-then-double-slash", "/\uff0e\uff0e//evil.com"),
    ("fullwidth-colon-scheme", "https\uff1a//evil.com"),
    ("fullwidth-host", "https://\uff50\uff55\uff42\uff4c\uff49\uff43.example/"),
    ("cyrillic-lookalike-host", "https://publ\u0456c.example/"),
    ("punycode-lookalike-host", "https://xn--publc-l5e.example/"),
    ("fullwidth-solidus-in-host", "https://evil.com\uff0fpublic.example"),
    # -- not a path and not an http(s) URL -------------------------------------------------
    ("bare-host", "evil.com"),
    ("bare-host-with-path", "evil.com/public.example"),
    ("path-relative", "./evil"),
    ("query-only", "?next=https://evil.com"),
    ("fragment-only", "#https://evil.com"),
    ("at-sign-first", "@evil.com"),
    # -- dangerous and non-http(s) schemes -------------------------------------------------
    ("javascript", "javascript:alert(1)"),
    ("javascript-mixed-case", "JaVaScRiPt:alert(1)"),
    ("javascript-leading-space", " javascript:alert(1)"),
    ("javascript-leading-tab", "\tjavascript:alert(1)"),
    ("javascript-tab-inside", "java\tscript:alert(1)"),
    ("javascript-newline-inside", "java\nscript:alert(1)"),
    ("javascript-with-authority", "javascript://public.example/%0aalert(1)"),
    ("javascript-then-public-url", "javascript:alert(1)//https://public.example"),
    ("data-html", "data:text/html,<script>alert(1)</script>"),
    ("data-uppercase-base64", "DATA:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
    ("vbscript", "vbscript:msgbox(1)"),
    ("vbscript-uppercase", "VBSCRIPT:msgbox(1)"),
    ("file", "file:///etc/passwd"),
    ("ftp-public-host", "ftp://public.example/"),
    ("wss-public-host", "wss://public.example/"),
    ("blob-public-origin", "blob:https://public.example/0b1c"),
    ("https-typo-scheme", "httpss://public.example/"),
    ("https-plus-scheme", "https+evil://public.example/"),
    # -- malformed http(s) URLs ------------------------------------------------------------
    ("scheme-without-slashes", "https:evil.com"),
    ("scheme-one-slash", "https:/evil.com"),
    ("http-scheme-one-slash", "http:/evil.com"),
    ("scheme-three-slashes", "https:///evil.com"),
    ("scheme-slash-backslash", "https:/\\evil.com"),
    ("scheme-double-backslash", "https:\\\\evil.com"),
    ("scheme-slashes-backslash", "https://\\evil.com"),
    ("empty-host", "https://"),
    ("empty-port", "https://public.example:/"),
    ("doubled-port", "https://public.example:443:443/"),
    ("port-out-of-range", "https://public.example:99999/"),
    ("hex-port", "https://public.example:0x1bb/"),
    ("signed-port", "https://public.example:+443/"),
    # -- other hosts -----------------------------------------------------------------------
    ("other-host", "https://evil.com"),
    ("other-host-http", "http://evil.com/"),
    ("other-host-uppercase", "HTTPS://EVIL.COM/"),
    ("other-host-mixed-case-scheme", "hTtPs://evil.com/"),
    ("other-host-public-url-in-path", "https://evil.com/https://public.example/"),
    ("other-host-public-url-in-query", "https://evil.com?https://public.example"),
    ("other-host-fragment-userinfo", "https://evil.com#@public.example"),
    ("other-host-fragment-public-url", "https://evil.com#https://public.example"),
    ("public-as-subdomain", "https://public.example.evil.com/"),
    ("public-as-suffix", "https://evilpublic.example/"),
    ("public-with-extra-letter", "https://public.examplee/"),
    ("public-trailing-dot", "https://public.example./"),
    ("encoded-dot-in-host", "https://public%2Eexample/"),
    ("encoded-at-in-host", "https://public.example%40evil.com/"),
    ("encoded-hash-in-host", "https://evil.com%23.public.example/"),
    ("semicolon-in-host", "https://evil.com;public.example/"),
    ("comma-in-host", "https://public.example,evil.com/"),
    ("allowed-as-subdomain", "https://renku.example.org.evil.com/"),
    # -- right host, wrong scheme or port --------------------------------------------------
    ("public-over-http", "http://public.example/"),
    ("public-http-port-443", "http://public.example:443/"),
    ("public-https-port-80", "https://public.example:80/"),
    ("public-other-port", "https://public.example:8443/"),
    ("public-port-zero", "https://public.example:0/"),
    ("allowed-other-port", "https://renku.example.org:8443/"),
    ("allowed-over-http", "http://renku.example.org/"),
    ("dev-origin-default-port", "http://localhost/"),
    ("dev-origin-over-https", "https://localhost:8080/"),
    # -- userinfo tricks (any userinfo at all) ---------------------------------------------
    ("userinfo-public-then-evil", "https://public.example@evil.com"),
    ("userinfo-public-port-then-evil", "https://public.example:443@evil.com/"),
    ("backslash-userinfo", "https://evil.com\\@public.example"),
    ("backslash-in-authority", "https://public.example\\evil.com"),
    ("backslash-dot-in-authority", "https://evil.com\\.public.example/"),
    ("userinfo-on-public-host", "https://user:pass@public.example/"),
    ("empty-userinfo-on-public-host", "https://@public.example/"),
    ("encoded-slash-userinfo", "https://public.example%2F@evil.com/"),
    # -- IP literals -----------------------------------------------------------------------
    ("ipv6-loopback", "https://[::1]/"),
    ("ipv6-mapped-ipv4", "https://[::ffff:127.0.0.1]/"),
    ("ipv6-brackets-around-public-host", "https://[public.example]/"),
    ("ipv6-loopback-for-localhost", "http://[::1]:8080/"),
    ("ipv4-loopback-for-localhost", "http://127.0.0.1:8080/"),
    ("ipv6-unclosed-bracket", "https://[::1/"),
    # -- our own origin, but a path that resolves to another host --------------------------
    ("public-origin-double-slash-path", "https://public.example//evil.com"),
    ("public-origin-encoded-double-slash-path", "https://public.example/%2F%2Fevil.com"),
    ("public-origin-dot-segment-path", "https://public.example/.//evil.com"),
    # -- too long --------------------------------------------------------------------------
    ("over-long-path", "/" + "a" * MAX_TARGET_LENGTH),
    ("over-long-public-url", PUBLIC_URL + "/" + "a" * MAX_TARGET_LENGTH),
]

OPEN_REDIRECT_PAYLOADS: list[str] = [payload for _, payload in _NAMED_PAYLOADS]
OPEN_REDIRECT_PAYLOAD_IDS: list[str] = [name for name, _ in _NAMED_PAYLOADS]


def test_payload_table_is_large_and_has_no_duplicates() -> None:
    assert len(OPEN_REDIRECT_PAYLOADS) >= 60
    assert len(set(OPEN_REDIRECT_PAYLOADS)) == len(OPEN_REDIRECT_PAYLOADS)
    assert len(set(OPEN_REDIRECT_PAYLOAD_IDS)) == len(OPEN_REDIRECT_PAYLOAD_IDS)


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS, ids=OPEN_REDIRECT_PAYLOAD_IDS)
def test_open_redirect_payload_is_rejected(payload: str) -> None:
    with pytest.raises(RedirectRejected) as caught:
        target(payload)
    assert caught.value.code == "rejected_redirect"
    assert 0 < len(str(caught.value)) < 100


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS, ids=OPEN_REDIRECT_PAYLOAD_IDS)
@pytest.mark.parametrize(
    "padding",
    [("", " "), (" ", ""), (" ", " "), ("\t", ""), ("", "\n"), ("\u3000", "\u200b")],
    ids=[
        "trailing-space",
        "leading-space",
        "both-spaces",
        "leading-tab",
        "trailing-newline",
        "unicode-spaces",
    ],
)
def test_padded_payload_is_still_rejected(payload: str, padding: tuple[str, str]) -> None:
    before, after = padding
    with pytest.raises(RedirectRejected):
        target(before + payload + after)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, "https://public.example/", id="none-gives-default"),
        pytest.param("", "https://public.example/", id="empty-gives-default"),
        pytest.param("/", "https://public.example/", id="root"),
        pytest.param("/projects", "https://public.example/projects", id="path"),
        pytest.param(
            "/projects/a/b?tab=files&page=2",
            "https://public.example/projects/a/b?tab=files&page=2",
            id="path-with-query",
        ),
        pytest.param(
            "/search?q=a%20b#results",
            "https://public.example/search?q=a%20b#results",
            id="path-with-encoded-space-query-and-fragment",
        ),
        pytest.param("/p#section", "https://public.example/p#section", id="path-with-fragment"),
        pytest.param(
            "/?next=//evil.com",
            "https://public.example/?next=//evil.com",
            id="double-slash-inside-query-is-data",
        ),
        pytest.param(
            "/login?next=https%3A%2F%2Fevil.com",
            "https://public.example/login?next=https%3A%2F%2Fevil.com",
            id="encoded-url-inside-query-is-data",
        ),
        pytest.param("/a//b", "https://public.example/a//b", id="inner-double-slash"),
        pytest.param("/.well-known/x", "https://public.example/.well-known/x", id="dot-file-name"),
        pytest.param("/caf%C3%A9", "https://public.example/caf%C3%A9", id="encoded-unicode-path"),
        pytest.param("/café", "https://public.example/caf%C3%A9", id="raw-unicode-path-encoded"),
        pytest.param("/p/{id}", "https://public.example/p/%7Bid%7D", id="non-url-ascii-encoded"),
        pytest.param("https://public.example", "https://public.example/", id="public-origin"),
        pytest.param(
            "https://public.example/projects?x=1#y",
            "https://public.example/projects?x=1#y",
            id="public-origin-with-path-query-fragment",
        ),
        pytest.param(
            "https://public.example?x=1",
            "https://public.example/?x=1",
            id="public-origin-query-without-path",
        ),
        pytest.param(
            "HTTPS://Public.Example/Path",
            "https://public.example/Path",
            id="scheme-and-host-case-folded-path-kept",
        ),
        pytest.param(
            "https://public.example:443/x", "https://public.example/x", id="default-port-dropped"
        ),
        pytest.param(
            "https://public.example:0443/x",
            "https://public.example/x",
            id="default-port-with-leading-zero",
        ),
        pytest.param(
            "https://public.example#@evil.com",
            "https://public.example/#@evil.com",
            id="userinfo-look-alike-in-fragment-stays-on-public",
        ),
        pytest.param(
            "https://renku.example.org/dashboard",
            "https://renku.example.org/dashboard",
            id="allowed-origin",
        ),
        pytest.param(
            "https://renku.example.org:443/",
            "https://renku.example.org/",
            id="allowed-origin-default-port",
        ),
        pytest.param(
            "http://localhost:8080/lab?x#y",
            "http://localhost:8080/lab?x#y",
            id="allowed-origin-with-port",
        ),
        pytest.param("http://LOCALHOST:8080", "http://localhost:8080/", id="allowed-origin-bare"),
    ],
)
def test_allowed_target_is_normalised(value: str | None, expected: str) -> None:
    result = target(value)
    assert result == expected
    parts = urlsplit(result)
    assert f"{parts.scheme}://{parts.netloc}" in ALLOWED_ORIGINS | {PUBLIC_URL}


def test_custom_default_is_used_for_a_missing_target() -> None:
    assert target(None, default="/auth/logged-out") == "https://public.example/auth/logged-out"


def test_custom_default_is_checked_like_any_target() -> None:
    with pytest.raises(RedirectRejected):
        target("", default="//evil.com")


def test_public_url_with_default_port_and_trailing_slash_is_normalised() -> None:
    assert target("/x", public_url="https://public.example:443/") == "https://public.example/x"


def test_allowed_origins_may_be_a_tuple() -> None:
    assert target("https://a.example/x", allowed_origins=("https://a.example",)) == (
        "https://a.example/x"
    )


def test_allowed_origin_given_with_default_port_matches_without_it() -> None:
    allowed = frozenset({"https://renku.example.org:443"})
    result = target("https://renku.example.org/x", allowed_origins=allowed)
    assert result == "https://renku.example.org/x"


def test_without_allowed_origins_only_the_public_origin_is_accepted() -> None:
    assert target("https://public.example/x", allowed_origins=frozenset()) == (
        "https://public.example/x"
    )
    with pytest.raises(RedirectRejected):
        target("https://renku.example.org/x", allowed_origins=frozenset())


def test_unicode_host_is_accepted_only_when_it_is_exactly_an_allowed_origin() -> None:
    allowed = frozenset({"https://bücher.example"})
    assert target("https://bücher.example/x", allowed_origins=allowed) == (
        "https://bücher.example/x"
    )
    for look_alike in (
        "https://BÜCHER.example/x",  # only ASCII is case-folded
        "https://bu\u0308cher.example/x",  # decomposed ü
        "https://xn--bcher-kva.example/x",  # its punycode: not the configured spelling
    ):
        with pytest.raises(RedirectRejected):
            target(look_alike, allowed_origins=allowed)


def test_target_of_exactly_the_maximum_length_is_accepted() -> None:
    path = "/" + "a" * (MAX_TARGET_LENGTH - 1)
    assert target(path) == PUBLIC_URL + path


def test_a_non_origin_in_the_configuration_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not an http"):
        target("/", allowed_origins=frozenset({"https://renku.example.org/path"}))
