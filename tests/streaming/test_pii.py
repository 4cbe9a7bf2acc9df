"""PII never leaves the first mile in clear (streaming/pii.py): keyed hashes, truncation, and scrubbing of values
wherever trackers put them."""

from __future__ import annotations

import pytest

from streaming import pii

SECRET = b"pii-secret-0123456789"
OTHER = b"another-secret-987654"


def test_a_keyed_hash_is_deterministic_normalized_and_keyed():
    h = pii.keyed_hash("Jane@Example.com ", SECRET)
    assert h.startswith(pii.HASH_PREFIX) and len(h) == len(pii.HASH_PREFIX) + 32
    assert h == pii.keyed_hash("jane@example.com", SECRET)  # joins survive case and whitespace
    assert h != pii.keyed_hash("jane@example.com", OTHER)
    assert "jane" not in h


@pytest.mark.parametrize(("ip", "prefix"), [
    ("8.8.8.8", "8.8.8.0/24"), ("85.214.132.117", "85.214.132.0/24"),
    ("2001:db8:85a3:1234:5678:8a2e:370:7334", "2001:db8:85a3::/48"),
    (None, None), ("", None), ("not-an-ip", None), ("999.1.1.1", None),
])
def test_an_ip_is_truncated_to_its_network(ip, prefix):
    assert pii.truncate_ip(ip) == prefix


def test_configured_fields_are_hashed_by_name_whatever_their_value():
    out = pii.scrub({"email": "a@b.co", "phone": 4155550100, "first_name": "Jane", "plan": "pro",
                     "birthday": "1990-01-02", "name": None, "address": True}, SECRET)
    assert out["email"] == pii.keyed_hash("a@b.co", SECRET)
    assert out["phone"] == pii.keyed_hash("4155550100", SECRET)
    assert out["first_name"].startswith("h:") and out["birthday"].startswith("h:")
    assert out["plan"] == "pro"
    assert out["name"] is None and out["address"] is True  # nothing to hide in null and booleans


def test_emails_phones_and_ips_in_free_text_are_hashed_anywhere():
    out = pii.scrub({"note": "mail jane@example.com or call +1 (415) 555-0100 from 10.1.2.3",
                     "items": [{"comment": "ping 2001:db8::1"}], "contact": "+44 20 7946 0958"}, SECRET)
    text = str(out)
    for clear in ("jane@example.com", "555-0100", "10.1.2.3", "2001:db8::1", "7946"):
        assert clear not in text
    assert out["note"].startswith("mail h:") and out["contact"] == pii.keyed_hash("+44 20 7946 0958", SECRET)


@pytest.mark.parametrize("value", ["2026-11-02T10:00:00Z", "Order 1234", "size 42", "v1.2.3", "sku-12345"])
def test_ordinary_values_are_kept(value):
    assert pii.scrub({"x": value}, SECRET) == {"x": value}


def test_urls_lose_their_query_string_in_text_and_as_page_paths():
    out = pii.scrub({"ref": "see https://shop.example/p?email=jane@example.com&x=1 now"}, SECRET)
    assert out["ref"] == "see https://shop.example/p now"
    assert pii.scrub_url("https://shop.example/cart?email=a@b.co#top", SECRET) == "https://shop.example/cart"
    assert pii.scrub_url(None, SECRET) is None


def test_long_strings_are_scrubbed_too():
    long = "x" * (pii.CACHED_LENGTH + 10) + " jane@example.com"
    assert "jane@example.com" not in pii.scrub({"text": long}, SECRET)["text"]


@pytest.mark.parametrize(("value", "hashed"), [
    ("Jane.Doe@Example.com", True), ("+1 (555) 123-4567", True), ("555.123.4567", True),
    ("3f2b6c1e-8a4d-4c1b-9e7f-2d5a6b7c8d9e", False), ("user-42", False), ("12345", False),
])
def test_an_identifier_that_is_an_email_or_a_phone_is_pseudonymized(value, hashed):
    out = pii.pseudonymous_id(value, SECRET)
    assert (out == pii.keyed_hash(value, SECRET)) is hashed
    assert (out == value) is not hashed


def test_a_missing_identifier_stays_missing():
    assert pii.pseudonymous_id(None, SECRET) is None
    assert pii.pseudonymous_id("", SECRET) == ""
