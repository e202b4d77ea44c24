"""Plain words for what the store keeps as codes: a reading's status and reason, a submission's state,
a refusal by billing. Residents never see `decreasing_value` or `frame_failed: …`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from babel.support import NullTranslations


OFFLINE = timedelta(days=1)  # feed.OFFLINE_AFTER: an offline event comes a day after the device was last heard


def N_(message: str) -> str:  # marks a msgid for extraction; translated where shown
    return message


READING_REASONS = {
    "frame_failed": N_("the photo could not be read (light, focus or a moved camera)"),
    "unreadable": N_("a digit could not be read"),
    "low_confidence": N_("the digits were not clear enough"),
    "ambiguous": N_("a wheel was between two digits and more than one value was possible"),
    "decrease": N_("lower than the previous reading, and a meter only goes up"),
    "rate_too_high": N_("rose faster than water can flow through the meter"),
    "unconfirmed_change": N_("a change waiting for a second photo that agrees"),
    "needs_confirmation": N_("several photos disagree with the last value; an installer will check the meter"),
    "outlier": N_("does not fit the readings around it"),
    "reanchored": N_("the device took a new starting value from several photos that agree; held back until confirmed"),
}

# Settlement (cloud_bridge.settlement, contract/settlement.py): why an ok reading is not billed, or not yet.
SETTLEMENT_REASONS = {
    "no_value": N_("nothing could be read from this photo"),
    "wheels_inconsistent": N_("these digits cannot stand together on a real meter"),
    "too_many_digits": N_("has more digits than this meter"),
    "below_billed": N_("lower than the value billing already has"),
    "too_fast_since_billed": N_("rose faster since the billed value than water can flow through the meter"),
    "higher_than_later": N_("higher than the readings after it"),
    "lower_than_earlier": N_("lower than the readings before it"),
    "too_fast": N_("rose faster than water can flow through the meter"),
    "disagrees": N_("does not fit the readings around it"),
    "awaiting_later": N_("waiting for the next readings to confirm it"),
    "first_reading": N_("the meter's first reading; waiting for more to confirm it"),
    "suspect_only": N_("only unsure readings around it so far"),
    "disputed": N_("the readings around it disagree; waiting for more"),
    "meter_changed": N_("the meter seems to have been replaced; the utility will check"),
    "meter_wrapped": N_("the meter went past its highest value and started again; the utility will check"),
}

BILLING_REASONS = {
    "decreasing_value": N_("lower than the value billing already has"),
    "outside_window": N_("the submission window was closed"),
    "unknown_payer": N_("billing does not know this payer code; the utility has been told"),
    "unknown_meter": N_("billing does not know this meter; the utility has been told"),
}

SUBMISSION_STATES = {
    "pending": N_("waiting to be sent"),
    "sending": N_("being sent"),
    "accepted": N_("accepted by billing"),
    "refused": N_("refused by billing"),
    "needs_attention": N_("held back for the utility to check"),
}

CREDIT_STATES = {
    "pending": N_("being credited"),
    "sending": N_("being credited"),
    "credited": N_("credited"),
    "refused": N_("not credited"),
    "needs_attention": N_("held back for the utility to check"),
}


class Words:
    """Bound to one language: templates call `words.reading(row)`, `words.billed(state, reason)`."""

    def __init__(self, t: NullTranslations) -> None:
        self.t = t

    def _(self, msgid: str) -> str:
        return self.t.gettext(msgid)

    def reading_status(self, row: Any) -> str:
        if getattr(row, "corrected_value", None):
            return self._("corrected")
        if row.status == "ok":
            settlement = getattr(row, "settlement", None)
            if settlement == "outlier":
                return self._("not used")
            if settlement == "pending":
                return self._("ok, to be confirmed")
            return self._("ok")
        if row.status == "error":
            return self._("not read")
        return self._("not sure")

    def reading_reason(self, row: Any) -> str:
        """Why a reading is not used as it is (or not yet), in words; empty for a settled ok one."""
        if getattr(row, "corrected_value", None):
            return ""
        if row.status == "ok":
            if getattr(row, "settlement", None) not in ("outlier", "pending"):
                return ""
            code = getattr(row, "settlement_code", None)
            if code in SETTLEMENT_REASONS:
                return self._(SETTLEMENT_REASONS[code])
            return self._("does not fit the readings around it") if row.settlement == "outlier" else \
                self._("waiting for the next readings to confirm it")
        code = getattr(row, "reason_code", None)
        if code in READING_REASONS:
            return self._(READING_REASONS[code])
        return self._("the device was not sure of this value")

    def refusal(self, reason: str | None) -> str:
        if not reason:
            return ""
        code = reason.split(":", 1)[0].split(" ", 1)[0].strip()
        if code in BILLING_REASONS:
            return self._(BILLING_REASONS[code])
        if code.startswith("only_suspect") or code == "no_readings":
            return self._("no reading this period was sure enough to send")
        return self._("the utility will look at it")

    def submission(self, state: str | None) -> str:
        return self._(SUBMISSION_STATES.get(state or "", N_("not sent yet")))

    def credit(self, state: str | None) -> str:
        return self._(CREDIT_STATES.get(state or "", N_("being credited")))

    def by(self, who: str) -> str:
        return {"resident": self._("you"), "installer": self._("installer"),
                "operator": self._("the utility")}.get(who, who)

    def event(self, e: Any, fmt: Any) -> str:
        """One notification in a sentence (`e`: feed.Event, `fmt`: i18n.Formats)."""
        if e.kind == "billed":
            return self._("Billing accepted %(value)s m³ of meter %(meter)s for %(period)s.") % {
                "value": e.value, "meter": e.meter_serial, "period": fmt.month(e.period)}
        if e.kind == "points":
            return self._("%(points)d loyalty points credited for %(period)s.") % {
                "points": e.points, "period": fmt.month(e.period)}
        if e.kind == "offline":
            return self._("The device of meter %(meter)s has not been heard from since %(since)s. Check its "
                          "power and network.") % {"meter": e.meter_serial, "since": fmt.when(e.at - OFFLINE)}
        if e.kind == "attention":
            return self._("Meter %(meter)s has no reading sure enough for %(period)s. Correct a reading before "
                          "%(until)s, or check the device.") % {
                "meter": e.meter_serial, "period": fmt.month(e.period), "until": fmt.until(e.until)}
        if e.kind == "correction":
            check = e.data.get("check")
            if check == "refused":
                what = self._("not accepted: it does not fit the meter's other readings")
            elif check == "review":
                what = self._("waiting for the utility to confirm it")
            else:
                what = self.submission(e.state) if e.state else self._("kept; the next submission pass uses it")
            return self._("Your correction of meter %(meter)s to %(value)s m³: %(what)s.") % {
                "meter": e.meter_serial, "value": e.value, "what": what}
        return e.kind  # type: ignore[no-any-return]

    def plausible(self, low: Any, high: Any, fmt: Any) -> str:
        """"between 120.000 and 121.500 m³" in words, or "" when unbounded on both sides."""
        if low is not None and high is not None:
            return self._("between %(low)s and %(high)s m³") % {"low": fmt.number(low), "high": fmt.number(high)}
        if low is not None:
            return self._("at least %(low)s m³") % {"low": fmt.number(low)}
        if high is not None:
            return self._("at most %(high)s m³") % {"high": fmt.number(high)}
        return ""

    def correction(self, c: Any, fmt: Any = None) -> str:
        """What became of a correction (`c`: portal.CorrectionRow; `fmt` to show the plausible range)."""
        state = getattr(c, "state", None)
        if state == "refused":
            span = self.plausible(c.plausible_low, c.plausible_high, fmt) if fmt is not None else ""
            if span:
                return self._("not accepted: it does not fit the meter's other readings (plausible: %(span)s)") % {
                    "span": span}
            return self._("not accepted: it does not fit the meter's other readings")
        if state == "review":
            return self._("waiting for the utility to confirm it")
        if c.submission_state:
            text = self.submission(c.submission_state)
            return f"{text}: {self.refusal(c.submission_reason)}" if c.submission_reason else text
        return self._("kept; the next submission pass uses it")

    def kind(self, kind: str) -> str:
        return self._("cold water") if kind == "cold" else self._("hot water")
