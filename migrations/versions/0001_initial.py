"""Initial catalogue: blobs, manifests, manifest layers and tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("digest", sa.String(71), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_access", sa.Float, nullable=False),
    )
    op.create_table(
        "manifests",
        sa.Column("digest", sa.String(71), primary_key=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "manifest_layers",
        sa.Column(
            "manifest_digest",
            sa.String(71),
            sa.ForeignKey("manifests.digest", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("blob_digest", sa.String(71), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_manifest_layers_blob", "manifest_layers", ["blob_digest"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name_key", sa.String(600), nullable=False, unique=True),
        sa.Column("host", sa.String(350), nullable=False),
        sa.Column("namespace", sa.String(80), nullable=False),
        sa.Column("model", sa.String(80), nullable=False),
        sa.Column("tag", sa.String(80), nullable=False),
        sa.Column("manifest_digest", sa.String(71), sa.ForeignKey("manifests.digest"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("modified_at", sa.Float, nullable=False),
        sa.Column("fetched_at", sa.Float),
        sa.Column("last_used", sa.Float),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("upstream", sa.String(400)),
    )
    op.create_index("ix_tags_manifest", "tags", ["manifest_digest"])


def downgrade() -> None:
    op.drop_index("ix_tags_manifest", "tags")
    op.drop_table("tags")
    op.drop_index("ix_manifest_layers_blob", "manifest_layers")
    op.drop_table("manifest_layers")
    op.drop_table("manifests")
    op.drop_table("blobs")
