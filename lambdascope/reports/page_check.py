"""What a stored report page may hold: what lambdascope's renderer (reports/html.py) writes and
nothing that runs or fetches. The registry refuses any other page at PutReport, so a page a
reader opens from `lambdascope report --html` carries no script, whoever stored it (a writer key
of the team, a worker's credential). Stdlib only: the registry imports it without matplotlib."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from lambdascope.reports import CSP

# Tag -> the attributes it may carry (our renderer's vocabulary; nothing else is written).
_PLAIN = ("head", "title", "style", "body", "h1", "h2", "h3", "ul", "li", "table", "tr", "th", "td",
          "figure", "figcaption", "pre")
ALLOWED: dict[str, frozenset[str]] = {
    **{tag: frozenset() for tag in _PLAIN},
    "html": frozenset({"lang"}),
    "meta": frozenset({"charset", "http-equiv", "content", "name"}),
    "p": frozenset({"class"}),
    "div": frozenset({"class", "style"}),
    "strong": frozenset({"style"}),
    "img": frozenset({"alt", "src"}),
}
INLINE_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]*")
COLOUR_STYLE = re.compile(r"(border-)?color:#[0-9a-fA-F]{3,6}")  # the verdict box's only style
# Inside the style sheet: nothing that fetches (url(), @import) or escapes the element.
STYLE_SHEET_BANNED = re.compile(r"url\s*\(|@import|expression\s*\(|</", re.IGNORECASE)


class PageRefused(ValueError):
    """The page holds something a report page never does; the message says what."""


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.csp = False
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED:
            raise PageRefused(f"<{tag}> is not something a report page holds")
        for name, value in attrs:
            if name not in ALLOWED[tag]:
                raise PageRefused(f"<{tag} {name}=...> is not something a report page holds")
            value = value or ""
            if tag == "img" and name == "src" and not INLINE_PNG.fullmatch(value):
                raise PageRefused("an image of a report page must be an inline PNG (data:image/png;base64,...)")
            if name == "style" and not COLOUR_STYLE.fullmatch(value):
                raise PageRefused(f"style {value[:40]!r} is not one a report page uses")
            if tag == "meta" and name == "http-equiv":
                if value.lower() != "content-security-policy":
                    raise PageRefused(f"<meta http-equiv={value[:40]!r}> is not one a report page uses")
                if dict(attrs).get("content") != CSP:
                    raise PageRefused("the page's Content-Security-Policy is not lambdascope's")
                self.csp = True
        self.in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_style and STYLE_SHEET_BANNED.search(data):
            raise PageRefused("the page's style sheet fetches or escapes (url(), @import, expression())")

    def handle_pi(self, data: str) -> None:
        raise PageRefused("processing instructions are not something a report page holds")

    def unknown_decl(self, data: str) -> None:
        raise PageRefused(f"<!{data[:20]}> is not something a report page holds")


def check_page(page: bytes) -> None:
    """Raise PageRefused unless ``page`` is UTF-8 HTML made only of what a report page holds,
    with lambdascope's Content-Security-Policy (an empty page: nothing to check)."""
    if not page:
        return
    try:
        text = page.decode("utf-8")
    except UnicodeDecodeError:
        raise PageRefused("a report page is UTF-8 HTML") from None
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if not checker.csp:
        raise PageRefused("the page has no Content-Security-Policy (lambdascope's pages always do)")
