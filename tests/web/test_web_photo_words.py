"""The photo page's words: the reader's reasons (English sentences) in the resident's language, refusals
with what to do."""

from __future__ import annotations

from decimal import Decimal

from cloud_bridge.web.i18n import Formats, translations
from cloud_bridge.web.words import PHOTO_REFUSALS, Words

REASON = ("wheel 5 (from the left) could not be read: glare, dirt, a finger or blur in front of the digit; "
          "wheels 2, 3 (from the left) read with little confidence (0.55, 0.61); wheel 4 (from the left) stand "
          "between two digits: 00530 or 00531; only 3 of 5 wheels were seen as digits; the others were placed "
          "beside them; a sentence the page does not know")


def test_the_readers_reasons_in_russian_and_english() -> None:
    ru = Words(translations("ru")).photo_reasons(REASON)
    assert ru == ["Не удалось прочитать цифры на местах 5 (считая слева): блик, грязь, палец или размытие перед ними.",
                  "Цифры на местах 2, 3 (считая слева) прочитаны неуверенно.",
                  "Барабаны на местах 4 (считая слева) стоят между двумя цифрами: 00530 или 00531.",
                  "Цифры видны только на 3 из 5 барабанов; остальные достроены рядом."]
    en = Words(translations("en")).photo_reasons(REASON)
    assert len(en) == 5 and en[-1] == "A sentence the page does not know."
    sure = Words(translations("ru")).photo_sureness({"status": "unsure", "confidence": 0.41, "reason": REASON}, None)
    assert sure.startswith("Не уверенно (41 %)") and "00530 или 00531" in sure
    assert Words(translations("ru")).photo_sureness({"status": "ok", "confidence": 0.978}, None).startswith(
        "Уверенно (98 %)")


def test_every_refusal_says_what_to_do_in_both_languages() -> None:
    fmt = Formats("ru", "Europe/Moscow")
    for lang in ("ru", "en"):
        words = Words(translations(lang))
        for code in (*PHOTO_REFUSALS, "unknown_code"):
            text = words.photo_refusal(code, fmt)
            assert text and text[-1] in ".!", (lang, code, text)
    out = Words(translations("ru")).photo_refusal("out_of_range", fmt, value="00016", low=Decimal("528"),
                                                 high=Decimal("2762"))
    assert out.startswith("00016 м³ не подходит") and "528,000" in out and "Ничего не сохранено" in out
