"""a deployment phase may be defined by an inventory filter (the operator's canary)

Revision ID: 0008_scale
Revises: 0007_groups_events
Create Date: 2026-11-30 02:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_scale'
down_revision = '0007_groups_events'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployment_phases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_filter', sa.JSON(none_as_null=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployment_phases', schema=None) as batch_op:
        batch_op.drop_column('target_filter')
