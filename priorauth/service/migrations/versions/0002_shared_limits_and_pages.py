"""sign-in failures shared by every serve process; a change counter; indexes for pages

Revision ID: 0002
Revises: 0001

- `signin_failures`: the sign-in rate limit lives in the database, so several workers (or
  several hosts on one PostgreSQL) count the same failures.
- `counters`: `cases` goes up in every transaction that changes a case, so a process can keep
  the worklist's counts and payers until some process changes a case.
- indexes: the API's stable order (created_at, id), and the worklist's payer filter and its
  status filter sorted by payer (both sorted the whole table before).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = [("created_at",), ("status", "payer"), ("payer", "updated_at"), ("payer", "reauthorization_due"),
           ("payer", "patient"), ("payer", "status")]


def upgrade() -> None:
    op.create_table("signin_failures", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("key", sa.String(64), nullable=False),
                    sa.Column("at", sa.DateTime, nullable=False))
    op.create_index("ix_signin_failures_key_at", "signin_failures", ["key", "at"])
    op.create_table("counters", sa.Column("name", sa.String(32), primary_key=True),
                    sa.Column("value", sa.BigInteger, nullable=False))
    op.execute(sa.text("INSERT INTO counters (name, value) VALUES ('cases', 0)"))
    for cols in INDEXES:
        op.create_index(f"ix_cases_{'_'.join(cols)}", "cases", [*cols, "id"])


def downgrade() -> None:
    for cols in INDEXES:
        op.drop_index(f"ix_cases_{'_'.join(cols)}", "cases")
    op.drop_table("counters")
    op.drop_table("signin_failures")
