"""The person's language on the server side: the same message catalogues as the phone page (static/locales/<code>.json,
read by static/messages.js), the choice of language for a server-rendered page, and dates formatted with Babel.

A catalogue value is a string, a list of strings, or {"one": ..., "other": ...} chosen by the count's plural rule;
"{name}" is filled in. English is the source: a key missing from another catalogue falls back to it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.dates import format_date as babel_date
from babel.dates import format_time
from markupsafe import Markup, escape

#: The languages of the catalogues, English first (the source and the fallback); the page's list in messages.js
#: must be the same (a test checks it).
LANGUAGES = ("en", "fr", "pt", "es", "sw")
LOCALES = Path(__file__).resolve().parent / "static" / "locales"
#: The remembered choice, shared by the phone page (which reads and writes it in JavaScript) and the follow-up page.
COOKIE = "mpoxscan_lang"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@cache
def catalogue(lang: str) -> dict:
    return json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))


def name(lang: str) -> str:
    """The language's name in itself (Français, Kiswahili)."""
    return catalogue(lang)["_meta"]["name"]


def menu_name(lang: str) -> str:
    """What the language menus show: the name, and, until a speaker has reviewed the catalogue, that it has not
    been (in the language itself): "Français (traduction automatique, non relue)"."""
    meta = catalogue(lang)["_meta"]
    return meta["name"] if meta.get("reviewed", True) else f"{meta['name']} ({meta['unreviewed']})"


def locale(lang: str) -> str:
    """The BCP 47 tag of a catalogue's formats and of its pages' lang attribute: _meta.locale where the code alone
    would mean another variety (Portuguese: pt-PT, where Babel and the browsers read "pt" as Brazil's), else the
    code."""
    return catalogue(lang)["_meta"].get("locale", lang)


def language_in(written: str, reader: str) -> str:
    """The name of language ``written`` as a reader of ``reader`` calls it ("anglais" for French), from CLDR."""
    return Locale.parse(locale(reader), sep="-").languages.get(written.split("-")[0], written)


def _fill(template: str, values: dict, lang: str, escaped: bool = False) -> str:
    def one(match: re.Match) -> str:
        value = values.get(match.group(1))
        if value is None:
            return match.group(0)  # visible, never silently blank
        if isinstance(value, datetime):
            value = format_date(value, lang)
        return str(escape(value)) if escaped else str(value)  # escape() leaves Markup as it is

    return _PLACEHOLDER.sub(one, template)


def text(lang: str, key: str, **values) -> str | list[str]:
    """The text for ``key`` in ``lang`` (English where missing; the key itself where English lacks it too), with
    "{name}" filled from ``values`` (a datetime is formatted for the language). A plural entry is chosen by
    ``values["count"]`` with the language's CLDR rule (Babel)."""
    entry = catalogue(lang).get(key)
    if entry is None:
        entry = catalogue("en").get(key, key)
    if isinstance(entry, dict):
        form = Locale.parse(locale(lang), sep="-").plural_form(values.get("count", 0))
        entry = entry.get(form, entry["other"])
    if isinstance(entry, list):
        return [_fill(item, values, lang) for item in entry]
    return _fill(entry, values, lang)


def markup(lang: str, key: str, **values) -> Markup:
    """``text`` for a template: the catalogue's text escaped, values escaped too unless they are Markup (so a
    template may put an element, such as the case number's <span>, inside a translated sentence)."""
    entry = text(lang, key)  # unfilled: the placeholders are filled after escaping
    if isinstance(entry, list):
        raise ValueError(f"{key} is a list: iterate over text() instead")
    escaped = str(escape(entry))
    return Markup(_fill(escaped, values, lang, escaped=True))


def format_date(moment: datetime, lang: str) -> str:
    """A date and time (UTC) as the language writes it: '26 nov. 2026, 14:05' in French. The medium date and the
    short time (no seconds), joined by the language's own CLDR pattern, as Intl.DateTimeFormat does on the page."""
    moment = moment.astimezone(timezone.utc)
    tag = Locale.parse(locale(lang), sep="-")
    joined = tag.datetime_formats["medium"]
    return joined.format(format_time(moment, "short", tzinfo=timezone.utc, locale=tag),
                         babel_date(moment, "medium", locale=tag))


def accepted(header: str | None) -> list[str]:
    """The languages of an Accept-Language header, most wanted first (q=0 left out)."""
    weighted = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, position, tag.strip()))
    return [tag for _q, _p, tag in sorted(weighted)]


def negotiate(header: str | None) -> str | None:
    """The catalogue that best fits an Accept-Language header ("fr-CA" -> "fr"), or None (Babel's negotiation)."""
    return negotiate_locale(accepted(header), LANGUAGES, sep="-")


def choose(request, fallback: str | None = None) -> str:
    """The language of a server-rendered page for the person: ``?lang=`` (the page's switch), then the remembered
    choice (cookie), then ``fallback`` (a case's own language), then the browser's Accept-Language, then English."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(COOKIE), fallback):
        if candidate in LANGUAGES:
            return candidate
    return negotiate(request.headers.get("accept-language")) or "en"


def template_context(lang: str) -> dict:
    """What a person's template needs: the language, t() and tlist() in it, and the switch's entries."""
    return {"lang": lang, "locale": locale(lang), "t": lambda key, **values: markup(lang, key, **values),
            "tlist": lambda key, **values: text(lang, key, **values),
            "languages": [(code, menu_name(code), locale(code)) for code in LANGUAGES]}


def remember(response, request) -> None:
    """Keep a language picked with ?lang= for the next pages (a year; readable by the page's script); Secure when
    the service is served over https, as its other cookies are."""
    lang = request.query_params.get("lang")
    if lang in LANGUAGES:
        secure = request.url.scheme == "https" or request.app.state.settings.secure_cookies
        response.set_cookie(COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax", path="/", secure=secure)
