"""Create the runs table.

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
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("error", sa.Text),
        sa.Column("seed", sa.Integer),
        sa.Column("params", sa.JSON),
        sa.Column("dataset", sa.String(128)),
        sa.Column("dataset_fingerprint", sa.String(64)),
        sa.Column("history", sa.JSON),
        sa.Column("test_metrics", sa.JSON),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("duration_s", sa.Float),
        sa.Column("device", sa.String(32)),
        sa.Column("library_versions", sa.JSON),
        sa.Column("artifact_path", sa.String(512)),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("plots", sa.JSON),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("runs")
