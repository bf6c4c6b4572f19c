"""PII masking for everything that leaves the service other than the enriched topic (logs, span attributes, DLQ)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# IBAN first (it contains long digit runs), then card-like and account-like digit runs, then phone numbers
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_ACCOUNT = re.compile(r"\b(?:acct|account|a/c|account no\.?|account number)[\s:#]*[\w-]*\d[\w-]{3,}", re.IGNORECASE)
_LONG_DIGITS = re.compile(r"\b\d{8,}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,5}){1,4}(?![\w])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone(m: re.Match[str]) -> str:
    # at least 7 digits, and not a date: "2024-05-01" and "10 20 30" stay readable
    found = m.group()
    if sum(c.isdigit() for c in found) < 7 or _ISO_DATE.fullmatch(found):
        return found
    return "[PHONE]"

# each pattern with its replacement: a token, or a function of the match
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (_EMAIL, "[EMAIL]"), (_IBAN, "[ACCOUNT]"), (_CARD, "[CARD]"), (_ACCOUNT, "[ACCOUNT]"),
    (_LONG_DIGITS, "[ACCOUNT]"), (_PHONE, _phone)]


def mask(text: str) -> str:
    for rx, token in _RULES:
        text = rx.sub(token, text)
    return text


def install_log_masking() -> None:
    """Masks every log record when it is created, whichever logger or handler gets it."""
    make_record = logging.getLogRecordFactory()

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg, record.args = mask(record.getMessage()), ()
        return record

    logging.setLogRecordFactory(masked_record)
