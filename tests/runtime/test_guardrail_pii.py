"""The PII policy's finder on its own: each entity found where its checksum or numbering plan holds
and left alone where it does not (the examples are the standards' published test values)."""

from __future__ import annotations

import pytest

from wallaroo_pulumi.guardrails import PII_ENTITIES
from wallaroo_pulumi.runtime.services.guardrails.pii import find, mask


@pytest.mark.parametrize(("entity", "found", "not_found"), [
    ("EMAIL_ADDRESS", "jo.doe+tag@mail.example.co.uk", "jo.doe@localhost"),
    ("PHONE_NUMBER", "+44 20 7946 0958", "+1 000-000-0000"),
    ("CREDIT_CARD", "5555 5555 5555 4444", "5555 5555 5555 4445"),  # Mastercard's test number; one digit off fails Luhn
    ("IBAN_CODE", "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 01"),
    ("US_SSN", "536-90-4399", "000-12-3456"),  # area 000 is never issued
    ("ES_DNI", "54362315K", "54362315A"),  # the letter is the number mod 23
    ("IT_FISCAL_CODE", "RCCMNL83S18D969H", "RCCMNL83S18D969A"),
    ("IN_AADHAAR", "2341 2341 2346", "2341 2341 2345"),  # Verhoeff check digit
    ("IP_ADDRESS", "2001:db8::8a2e:370:7334", "999.1.1.1"),
    ("SECRET", "AKIAIOSFODNN7EXAMPLE", "AKIA-not-a-key"),
])
def test_each_entity_is_found_only_where_its_check_holds(entity: str, found: str, not_found: str) -> None:
    text = f"before {found} after"
    spans = find(text, PII_ENTITIES, "US")
    assert [(s.entity, text[s.start:s.end]) for s in spans] == [(entity, found)]
    assert find(f"before {not_found} after", [entity], "US") == []
    assert mask(text, spans) == f"before <{entity}> after"


def test_only_the_asked_entities_and_no_overlaps() -> None:
    text = "card 4111111111111111, mail a@b.io"
    assert [s.entity for s in find(text, ["EMAIL_ADDRESS"])] == ["EMAIL_ADDRESS"]
    assert [s.entity for s in find(text, PII_ENTITIES)] == ["CREDIT_CARD", "EMAIL_ADDRESS"]  # the card is not a phone too
    assert find("meet at 10:30:15 on 2024-01-15, order 12345", PII_ENTITIES) == []
