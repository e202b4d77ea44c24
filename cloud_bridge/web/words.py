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

# The photo page (cloud_bridge/web/photo.py): why a photo or a value was not taken, keyed by the stable
# codes of cloud_bridge/photo (upload.PhotoRefused, store.PhotoError) and the page's own.
PHOTO_REFUSALS = {
    "empty": N_("The file is empty. Choose the photo again."),
    "too_large": N_("The photo is larger than 10 MB. Take it again at a lower resolution, or send a screenshot "
                    "of it."),
    "not_an_image": N_("This file is not a photo. Send a JPEG, PNG or HEIC photo of the meter."),
    "unsupported_format": N_("This kind of picture is not taken. Send a JPEG, PNG or HEIC photo of the meter."),
    "too_many_pixels": N_("The picture claims to be far larger than any phone photo, so it is not opened. Send the "
                          "photo as the camera took it."),
    "too_small": N_("The picture is too small to read the digits. Take the photo closer to the meter."),
    "corrupt": N_("The photo could not be opened (damaged or cut off). Take it again."),
    "no_counter": N_("No meter counter was found in this photo. Take the photo again with the digits in the "
                     "middle, or drag the frame onto the digits."),
    "no_meter": N_("Choose one of your meters."),
    "too_many": N_("Too many photos in the last hour. Try again later."),
    "not_a_value": N_("Enter the number the meter shows, digits with a point or comma, e.g. 00123.456."),
    "already_sent": N_("This photo was sent already. Take a new one for a new reading."),
    "bad_box": N_("The frame could not be used. Drag it onto the digits again."),
    "reader_missing": N_("Photos cannot be read right now. Try again later, or correct a reading by hand."),
    "reader_failed": N_("Photos cannot be read right now. Try again later, or correct a reading by hand."),
}

PHOTO_UNUSABLE = N_("This photo cannot be used. Take another one.")

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
        if getattr(row, "source", None) == "photo" and getattr(row, "reason_code", None) == "review" \
                and getattr(row, "settlement", None) != "settled":
            return self._("waiting for the utility to confirm it")
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
        if e.kind == "attention" and e.data.get("read_from") == "photo":
            return self._("Meter %(meter)s has no reading for %(period)s yet. Photograph it before %(until)s.") % {
                "meter": e.meter_serial, "period": fmt.month(e.period), "until": fmt.until(e.until)}
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

    def photo_refusal(self, code: str, fmt: Any, **values: Any) -> str:
        """Why a photo (or the value sent with it) was not taken, and what to do, in the resident's language."""
        if code == "out_of_range":
            span = self.plausible(values.get("low"), values.get("high"), fmt)
            text = self._("%(value)s m³ does not fit this meter's readings.") % {"value": values.get("value")}
            if span:
                text += " " + self._("Its readings allow %(span)s.") % {"span": span}
            return text + " " + self._("Is this a photo of the meter chosen above? Check the number and the meter, "
                                       "then send again. Nothing was stored.")
        if code == "too_many_digits" and "digits" in values:
            return self._("The number has more digits than this meter shows (%(digits)d before the point, "
                          "%(decimals)d after).") % {"digits": values["digits"], "decimals": values["decimals"]}
        return self._(PHOTO_REFUSALS.get(code, PHOTO_UNUSABLE))

    def photo_sureness(self, proposal: dict[str, Any], fmt: Any) -> str:
        """How sure the reader is of its proposal, in words."""
        status = proposal.get("status")
        confidence = proposal.get("confidence")
        pct = f"{round(float(confidence) * 100)} %" if isinstance(confidence, int | float) else "—"
        if status == "ok":
            return self._("Sure (%(pct)s). Check that it matches the meter.") % {"pct": pct}
        if status == "unsure":
            text = self._("Not sure (%(pct)s): check every digit against the meter and correct the value if "
                          "needed.") % {"pct": pct}
            reason = proposal.get("reason")
            return " ".join([text, *self.photo_reasons(reason if isinstance(reason, str) else None)])
        return self._("No digits found.")

    def photo_reasons(self, reason: str | None) -> list[str]:
        """The reader's reasons (meter_vision.photo: English sentences joined by '; ') in the resident's
        language; a sentence it does not know is left out rather than shown in English to a Russian page."""
        import re

        out = []
        for part in (reason or "").split("; "):
            where = re.match(r"^wheels? ([0-9, ]+) \(from the left\) (.*)$", part)
            places = where.group(1).strip() if where else ""
            rest = where.group(2) if where else part
            if where and rest.startswith("could not be read"):
                out.append(self._("The digits at places %(n)s (from the left) could not be read: glare, dirt, a "
                                  "finger or blur in front of them.") % {"n": places})
            elif where and rest.startswith("read with little confidence"):
                out.append(self._("The digits at places %(n)s (from the left) were read with little "
                                  "confidence.") % {"n": places})
            elif where and (between := re.match(r"stand between two digits: (\S+) or (\S+)", rest)):
                out.append(self._("The wheels at places %(n)s (from the left) stand between two digits: %(a)s or "
                                  "%(b)s.") % {"n": places, "a": between.group(1), "b": between.group(2)})
            elif (seen := re.match(r"^only ([0-9]+) of ([0-9]+) wheels were seen", part)):
                out.append(self._("Only %(found)s of %(n)s wheels were seen as digits; the others were placed "
                                  "beside them.") % {"found": seen.group(1), "n": seen.group(2)})
            elif part.startswith(("the others were placed", "it was divided")):
                continue  # the second half of the sentence before (it had a '; ' of its own)
            elif part.startswith("no digits were seen inside the box"):
                out.append(self._("No digits were seen inside the frame; it was divided into equal wheels."))
            elif part and self.t.gettext("photo") == "photo":  # English: the reader's own words are fine
                out.append(part[:1].upper() + part[1:] + ("" if part.endswith(".") else "."))
        return out

    def photo_outcome(self, result: Any, fmt: Any) -> tuple[str, str]:
        """What became of a sent photo reading (`result`: photo.store.SendResult): (text, tone)."""
        if result.action == "review":
            return (self._("Stored as a photo reading. There are no earlier readings of this meter to check it "
                           "against, so the utility confirms it before it is billed."), "warn")
        s = result.submission
        if s is not None:
            if s.state == "accepted":
                return self._("Stored as a photo reading, sent to billing and accepted."), "ok"
            if s.state == "refused":
                return (self._("Stored as a photo reading; billing refused it: %(why)s.") % {
                    "why": self.refusal(s.reason)}, "error")
            if s.state in ("pending", "sending"):
                return (self._("Stored as a photo reading. Billing did not answer yet; it is sent again with the "
                               "next submission pass."), "ok")
            return (self._("Stored as a photo reading. Billing already has a reading of this meter for the "
                           "month."), "ok")
        return (self._("Stored as a photo reading. It is sent to billing with the first submission pass after "
                       "the window opens."), "ok")

    def source(self, row: Any) -> str:
        """Where a reading came from: the device, or the resident's photo (and whether they edited it)."""
        if getattr(row, "source", "device") != "photo":
            return self._("device")
        return self._("photo, value edited") if getattr(row, "edited", False) else self._("photo")

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
