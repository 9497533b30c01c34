"""Cluster mode: the blobs each node uses right now, so the node on duty never prunes them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_leases",
        sa.Column("node_id", sa.String(32), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("digest", sa.String(71), primary_key=True),
    )
    op.create_index("ix_blob_leases_digest", "blob_leases", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_blob_leases_digest", "blob_leases")
    op.drop_table("blob_leases")
