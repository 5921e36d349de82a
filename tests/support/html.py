"""Reading server-rendered HTML as a browser parses it (html.parser), without a browser."""

from __future__ import annotations

from html.parser import HTMLParser


class ElementCollector(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str, tag: str) -> list[dict]:
    """The attributes of every `tag` element of `html`."""
    parser = ElementCollector()
    parser.feed(html)
    return [attrs for name, attrs in parser.tags if name == tag]


def injected_images(html: str) -> list[dict]:
    """`img` elements that carry an event handler: what `<img src=x onerror=...>` in
    people's text becomes if a page forgets to escape it."""
    return [attrs for attrs in elements(html, "img") if any(name.startswith("on") for name in attrs)]
