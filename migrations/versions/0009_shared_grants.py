"""Cluster mode: registry tokens and used nonces shared by the nodes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_issued_tokens_expires_at", "issued_tokens", ["expires_at"])
    op.create_table(
        "used_nonces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("used_at", sa.Float, nullable=False),
    )
    op.create_index("ix_used_nonces_used_at", "used_nonces", ["used_at"])


def downgrade() -> None:
    op.drop_index("ix_used_nonces_used_at", "used_nonces")
    op.drop_table("used_nonces")
    op.drop_index("ix_issued_tokens_expires_at", "issued_tokens")
    op.drop_table("issued_tokens")
