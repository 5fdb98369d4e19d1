"""The first schema: inspections, reviews, model versions and activations.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("station", sa.String(200)),
        sa.Column("client", sa.String(200)),
        sa.Column("source", sa.Text),
        sa.Column("digest", sa.String(64)),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("cls", sa.String(200)),
        sa.Column("confidence", sa.Float),
        sa.Column("probabilities", sa.JSON),
        sa.Column("map_max", sa.Float),
        sa.Column("map_mean", sa.Float),
        sa.Column("peak_row", sa.Integer),
        sa.Column("peak_col", sa.Integer),
        sa.Column("model_id", sa.String(200)),
        sa.Column("model_version", sa.Integer),
        sa.Column("latency_ms", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("image_key", sa.String(64)),
        sa.Column("overlay_key", sa.String(64)),
        sa.Column("image_pruned_at", TZ),
        sa.Column("review_verdict", sa.String(16)),
        sa.Column("reviewed_by", sa.String(200)),
        sa.Column("reviewed_at", TZ),
        sa.Column("dest", sa.Text),
        sa.Column("moved_at", TZ),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_index("ix_inspections_created_at", "inspections", ["created_at"])
    op.create_index("ix_inspections_digest", "inspections", ["digest"])
    op.create_index("ix_inspections_verdict", "inspections", ["verdict"])
    op.create_index("ix_inspections_published", "inspections", ["published", "id"])
    op.create_index("ix_inspections_image_key", "inspections", ["image_key"])
    op.create_index("ix_inspections_overlay_key", "inspections", ["overlay_key"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.Integer,
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("who", sa.String(200)),
    )
    op.create_index("ix_reviews_inspection_id", "reviews", ["inspection_id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("digest", sa.String(64)),
        sa.Column("threshold", sa.Float),
        sa.Column("note", sa.Text),
        sa.Column("parent_version", sa.Integer),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("activated_at", TZ),
        sa.Column("activated_by", sa.String(200)),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions"),
    )
    op.create_table(
        "model_activations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("who", sa.String(200)),
    )
    op.create_index("ix_model_activations_model_id", "model_activations", ["model_id"])


def downgrade() -> None:
    op.drop_table("model_activations")
    op.drop_table("model_versions")
    op.drop_index("ix_reviews_inspection_id", "reviews")
    op.drop_table("reviews")
    op.drop_table("inspections")
