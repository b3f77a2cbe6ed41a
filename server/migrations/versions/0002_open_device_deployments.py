"""an index of open device deployments, for the poll's "anything open?"

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 19:13:57.047133
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

OPEN = sa.text('finished_at IS NULL')


def upgrade() -> None:
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.create_index('ix_device_deployments_open', ['device_id'], unique=False,
                              postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade() -> None:
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.drop_index('ix_device_deployments_open')
