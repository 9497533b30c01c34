"""What the upstream's version gate answered for each tag, so cached tags keep its verdicts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_gates",
        sa.Column("name_key", sa.String(600), primary_key=True),
        sa.Column("manifest_digest", sa.String(71), nullable=True),
        sa.Column("passed_version", sa.String(32), nullable=True),
        sa.Column("refused_version", sa.String(32), nullable=True),
        sa.Column("refused_status", sa.Integer, nullable=True),
        sa.Column("refused_body", sa.LargeBinary, nullable=True),
        sa.Column("refused_type", sa.String(255), nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("version_gates")
