"""Cluster mode: each fill's owning node and its heartbeat, so one node in the cluster fetches a
blob and another takes its fill over when it dies.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("owner", sa.String(32)))
        batch.add_column(sa.Column("heartbeat_at", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
