"""Personal data and secrets in a text, by pattern, each candidate confirmed where a check exists:
card numbers by Luhn, IBANs by their mod-97 check digits, national ids by their checksums
(python-stdnum), phone numbers by Google's numbering plan (phonenumbers), IPs by `ipaddress`.
No model is loaded (D45)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.us import ssn


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# (entity, candidate pattern, confirmation): the most specific first; a later span that overlaps
# an earlier one is dropped (a card number is not also a phone number).
_PATTERNS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("SECRET", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"), None),
    ("SECRET", re.compile(
        r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|sk-ant-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
        r"|glpat-[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"), None),
    ("EMAIL_ADDRESS", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), None),
    ("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b"), iban.is_valid),
    ("CREDIT_CARD", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _card),
    ("US_SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), ssn.is_valid),
    ("ES_DNI", re.compile(r"\b\d{8}-?[A-Za-z]\b"), dni.is_valid),
    ("IT_FISCAL_CODE", re.compile(r"\b[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z]\b"), codicefiscale.is_valid),
    ("IN_AADHAAR", re.compile(r"\b[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}\b"), aadhaar.is_valid),
    ("IP_ADDRESS", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), _ip),
    ("IP_ADDRESS", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ip),
)
# Where a phone number may be: the numbering-plan matcher runs on these stretches only, not on the
# whole text (a tenth of the time on prose).
_PHONE_CANDIDATE = re.compile(r"[+(]?\d[\d \t().\-/]{5,24}\d")


def find(text: str, entities: Iterable[str], phone_region: str = "US") -> list[Span]:
    """The spans of `entities` in `text`, in order, none overlapping."""
    wanted = set(entities)
    spans: list[Span] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s.start or start >= s.end for s in spans)

    for entity, pattern, confirm in _PATTERNS:
        if entity not in wanted:
            continue
        for m in pattern.finditer(text):
            if free(m.start(), m.end()) and (confirm is None or confirm(m.group())):
                spans.append(Span(entity, m.start(), m.end()))
    if "PHONE_NUMBER" in wanted:
        for candidate in _PHONE_CANDIDATE.finditer(text):
            if any(s.start <= candidate.start() and candidate.end() <= s.end for s in spans):
                continue  # a card number, an IBAN...: no phone number inside
            for m in phonenumbers.PhoneNumberMatcher(candidate.group(), phone_region, leniency=phonenumbers.Leniency.VALID):
                start, end = candidate.start() + m.start, candidate.start() + m.end
                if free(start, end):
                    spans.append(Span("PHONE_NUMBER", start, end))
    return sorted(spans, key=lambda s: s.start)


def mask(text: str, spans: list[Span]) -> str:
    """`text` with each span replaced by `<ENTITY>`."""
    out, last = [], 0
    for s in spans:
        out += [text[last:s.start], f"<{s.entity}>"]
        last = s.end
    return "".join(out) + text[last:]
