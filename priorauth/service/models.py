"""SQLAlchemy 2 models of the case store. The schema itself is made by the Alembic migrations.

Case ids are random (`secrets.token_urlsafe`): URLs carry them, never a referral id or a name.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Process-wide values every `serve` process shares (the session signing key)."""
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ApiToken(Base):
    """Only the SHA-256 of a token is kept: tokens are 256-bit random, so a fast hash is enough."""
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Case(Base):
    """One referral's prior authorization over its life. `version` guards concurrent changes."""
    __tablename__ = "cases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(64))
    patient: Mapped[str] = mapped_column(String(200))  # "Family, Given": shown on pages only
    payer: Mapped[str] = mapped_column(String(64))
    therapy: Mapped[str] = mapped_column(String(16))
    request_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    determination: Mapped[str] = mapped_column(String(24))
    missing: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of what to document
    result: Mapped[str] = mapped_column(Text)  # the determination JSON (spec section 3)
    referral_version: Mapped[int] = mapped_column(Integer, default=1)
    auth_number: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    approved_units: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    auth_start: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    auth_end: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    reauthorization_due: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    units_given: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the worklist sorts by one column with the id as tie-break (stable pages), over all cases
    # or one status: an index per order lets a page read 50 rows instead of sorting them all
    __table_args__ = tuple(Index(f"ix_cases_{'_'.join(cols)}", *cols, "id") for cols in (
        ("updated_at",), ("reauthorization_due",), ("patient",), ("payer",), ("status",),
        ("status", "updated_at"), ("status", "reauthorization_due"), ("status", "patient"),
        # migration 0002: the API's stable order, the payer filter, status filter sorted by payer
        ("created_at",), ("status", "payer"), ("payer", "updated_at"), ("payer", "reauthorization_due"),
        ("payer", "patient"), ("payer", "status")))


class ReferralVersion(Base):
    """Every referral a case has had, oldest first: a correction adds one, never overwrites."""
    __tablename__ = "referral_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)  # the validated referral as JSON
    determination: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (Index("ix_referral_versions_case", "case_id", "number", unique=True),)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(24))
    date: Mapped[dt.date] = mapped_column(Date)
    data: Mapped[str] = mapped_column(Text, default="{}")  # the event's own fields as JSON
    from_status: Mapped[str] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Audit(Base):
    """Who read or changed what, when. Never patient data: user, action, case id, time."""
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    case_id: Mapped[Optional[str]] = mapped_column(String(32), nullable=True, index=True)


class SigninFailure(Base):
    """One failed sign-in: `key` is the SHA-256 of (user name, address), never the name itself.
    In the database, so every serve process counts the same failures."""
    __tablename__ = "signin_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (Index("ix_signin_failures_key_at", "key", "at"),)


class Counter(Base):
    """`cases`: raised by every transaction that changes a case (caches key on it)."""
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
