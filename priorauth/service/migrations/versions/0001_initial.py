"""initial: users, api tokens, cases, referral versions, events, audit, settings

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("settings", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(64), nullable=False, unique=True),
                    sa.Column("role", sa.String(16), nullable=False),
                    sa.Column("password_hash", sa.Text, nullable=False),
                    sa.Column("active", sa.Boolean, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("api_tokens", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
                              nullable=False, index=True),
                    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("cases", sa.Column("id", sa.String(32), primary_key=True),
                    sa.Column("referral_id", sa.String(64), nullable=False),
                    sa.Column("patient", sa.String(200), nullable=False),
                    sa.Column("payer", sa.String(64), nullable=False),
                    sa.Column("therapy", sa.String(16), nullable=False),
                    sa.Column("request_type", sa.String(16), nullable=False),
                    sa.Column("status", sa.String(24), nullable=False),
                    sa.Column("determination", sa.String(24), nullable=False),
                    sa.Column("missing", sa.Text, nullable=False),
                    sa.Column("result", sa.Text, nullable=False),
                    sa.Column("referral_version", sa.Integer, nullable=False),
                    sa.Column("auth_number", sa.String(64)),
                    sa.Column("approved_units", sa.Integer),
                    sa.Column("auth_start", sa.Date),
                    sa.Column("auth_end", sa.Date),
                    sa.Column("reauthorization_due", sa.Date),
                    sa.Column("units_given", sa.Integer, nullable=False),
                    sa.Column("version", sa.Integer, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False),
                    sa.Column("updated_at", sa.DateTime, nullable=False))
    for cols in (("updated_at",), ("reauthorization_due",), ("patient",), ("payer",), ("status",),
                 ("status", "updated_at"), ("status", "reauthorization_due"), ("status", "patient")):
        op.create_index(f"ix_cases_{'_'.join(cols)}", "cases", [*cols, "id"])
    op.create_table("referral_versions", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"),
                              nullable=False),
                    sa.Column("number", sa.Integer, nullable=False),
                    sa.Column("data", sa.Text, nullable=False),
                    sa.Column("determination", sa.String(24), nullable=False),
                    sa.Column("created_by", sa.String(64), nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_index("ix_referral_versions_case", "referral_versions", ["case_id", "number"], unique=True)
    op.create_table("events", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"),
                              nullable=False, index=True),
                    sa.Column("type", sa.String(24), nullable=False),
                    sa.Column("date", sa.Date, nullable=False),
                    sa.Column("data", sa.Text, nullable=False),
                    sa.Column("from_status", sa.String(24), nullable=False),
                    sa.Column("to_status", sa.String(24), nullable=False),
                    sa.Column("created_by", sa.String(64), nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("at", sa.DateTime, nullable=False, index=True),
                    sa.Column("user", sa.String(64), nullable=False),
                    sa.Column("action", sa.String(48), nullable=False),
                    sa.Column("case_id", sa.String(32), index=True))


def downgrade() -> None:
    for table in ("audit", "events", "referral_versions", "cases", "api_tokens", "users", "settings"):
        op.drop_table(table)
