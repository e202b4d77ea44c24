"""Every text of the portal has its Russian, and the catalog has nothing stale."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import cloud_bridge.web

WEB = Path(cloud_bridge.web.__file__).parent


def extracted() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "N_": None}
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(WEB), method_map, options, keywords=keywords):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


def test_every_message_has_a_russian_translation() -> None:
    with (WEB / "locale" / "ru" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f)
    translated = {m.id: m.string for m in catalog if m.id}
    used = extracted()
    assert len(used) > 100
    assert sorted(m for m in used if not translated.get(m)) == []
    assert sorted(set(translated) - used) == []  # nothing stale
    for msgid, ru in translated.items():  # the same placeholders on both sides
        import re

        assert sorted(re.findall(r"%\(\w+\)\w", msgid)) == sorted(re.findall(r"%\(\w+\)\w", str(ru))), msgid
