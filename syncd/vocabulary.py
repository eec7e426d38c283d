"""The words syncd's tables and settings use, as types.

An event's ``status`` and ``source`` are stored as text; these enums are
the only place their values are spelled, and the CHECK constraints on
``events`` are built from them (migration 0007). Being ``StrEnum``s, their
members compare equal to the text the database hands back.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """Where an event stands in the inbox."""

    PENDING = "pending"  # not applied yet
    APPLIED = "applied"
    IGNORED = "ignored"  # a type syncd does not normalize
    REJECTED = "rejected"  # failed verification: never applied
    FAILED = "failed"  # gave up after retries, or cannot be applied


class EventSource(StrEnum):
    """How an event reached the inbox."""

    WEBHOOK = "webhook"
    RECONCILE = "reconcile"
    BACKFILL = "backfill"
    AUDIT = "audit"  # syncd audit --repair


class VerifyMode(StrEnum):
    """What a webhook's body is worth: ``api`` applies the API's copy of each
    event, ``off`` the body as posted."""

    API = "api"
    OFF = "off"


#: Statuses an operator may send back to pending (``syncd events retry``).
RETRYABLE = (EventStatus.FAILED, EventStatus.REJECTED)
#: Statuses that count as a backlog (metrics, alerts).
BACKLOG = (EventStatus.PENDING, EventStatus.FAILED, EventStatus.REJECTED)


def check_in(column: str, enum: type[StrEnum]) -> str:
    """SQL of a CHECK that ``column`` holds one of ``enum``'s values."""
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"
