"""Languages of the portal: Russian (default) and English. Messages are English msgids in the code and
templates; `locale/ru/LC_MESSAGES/messages.po` translates them (Babel reads the .po at start, so there is
no compiled file to keep in step). `tests/web/test_web_i18n.py` fails when a msgid has no translation.

To add a message: write `_("...")` in a template or `t.gettext("...")` in code, add the msgid and its
Russian to the .po (or run `pybabel extract -F cloud_bridge/web/babel.cfg -o /tmp/m.pot cloud_bridge/web`
and `pybabel update -i /tmp/m.pot -d cloud_bridge/web/locale`)."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"
LANGUAGE_NAMES = {"ru": "Русский", "en": "English"}


@cache
def translations(lang: str) -> NullTranslations:
    """The catalog for `lang` (English is the msgids themselves)."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == "en" or not po.is_file():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def pick_language(value: object) -> str:
    return value if isinstance(value, str) and value in LANGUAGES else DEFAULT_LANGUAGE


class Formats:
    """Dates, times and numbers for one language and the utility's time zone."""

    def __init__(self, lang: str, timezone: str) -> None:
        self.lang = lang
        self.tz = ZoneInfo(timezone)

    def when(self, value: datetime | None, fmt: str = "medium") -> str:
        if value is None:
            return "—"
        return format_datetime(value.astimezone(self.tz), format="d MMM y, HH:mm", locale=self.lang) \
            if fmt == "medium" else format_datetime(value.astimezone(self.tz), format=fmt, locale=self.lang)

    def short(self, value: datetime) -> str:
        """For tables on a phone: "20 нояб., 11:40"."""
        return format_datetime(value.astimezone(self.tz), format="d MMM, HH:mm", locale=self.lang)

    def until(self, value: datetime) -> str:
        """An exclusive end shown as the last minute people can still act (00:00 on the 4th → 23:59 on the 3rd)."""
        return self.when(value - timedelta(seconds=1))

    def month(self, period: str) -> str:
        """"2026-11" → "ноябрь 2026" / "November 2026"."""
        year, month = (int(x) for x in period.split("-"))
        return format_date(date(year, month, 1), format="LLLL y", locale=self.lang)

    def day(self, day: str) -> str:
        """"2026-11-05" → "5 нояб." / "Nov 5"."""
        return format_date(date.fromisoformat(day), format="d MMM", locale=self.lang)

    def short_month(self, period: str) -> str:
        year, month = (int(x) for x in period.split("-"))
        return format_date(date(year, month, 1), format="LLL yy", locale=self.lang)

    def on_day(self, value: datetime | None) -> str:
        return format_date(value.astimezone(self.tz), format="d MMM y", locale=self.lang) if value else "—"

    def number(self, value: Decimal | float | str | None, digits: int = 3) -> str:
        if value is None:
            return "—"
        return format_decimal(Decimal(str(value)), format="#,##0." + "0" * digits, locale=self.lang) \
            if digits else format_decimal(Decimal(str(value)), format="#,##0", locale=self.lang)
