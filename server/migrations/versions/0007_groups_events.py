"""dynamic groups (inventory values indexed for their filters) and events with webhooks

Revision ID: 0007_groups_events
Revises: 0005_signatures
Create Date: 2026-11-29 22:30:00
"""
import math
import re

import sqlalchemy as sa
from alembic import op

revision = '0007_groups_events'
down_revision = '0006_rollouts'
branch_labels = None
depends_on = None

OPEN = sa.text('finished_at IS NULL')
BYTEWISE_TEXT = sa.String(512, collation="C").with_variant(sa.String(512), "sqlite")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# As server.inventory.filters at this revision (a migration keeps its own copy).
DECIMAL = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
MAX_FILTERED_CHARS = 512


def indexed_values(device_id: str, name: str, value) -> list[dict]:
    rows = []
    for item in dict.fromkeys(value if isinstance(value, list) else [value]):
        item = str(item)
        if len(item) <= MAX_FILTERED_CHARS:
            number = float(item) if DECIMAL.fullmatch(item) else None
            rows.append({"device_id": device_id, "name": name, "value": item,
                         "number": number if number is not None and math.isfinite(number)
                         else None})
    return rows


def upgrade() -> None:
    values = op.create_table(
        'inventory_values',
        sa.Column('device_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('value', BYTEWISE_TEXT, nullable=False),
        sa.Column('number', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('device_id', 'name', 'value'))
    op.create_index('ix_inventory_values_text', 'inventory_values', ['name', 'value'])
    op.create_index('ix_inventory_values_number', 'inventory_values', ['name', 'number'])
    op.create_index('ix_inventory_name', 'inventory', ['name', 'device_id'])
    inventory = sa.table('inventory', sa.column('device_id'), sa.column('name'),
                         sa.column('value', sa.JSON))
    rows = [row for device_id, name, value in op.get_bind().execute(sa.select(inventory))
            for row in indexed_values(device_id, name, value)]
    if rows:
        op.bulk_insert(values, rows)

    op.create_table(
        'dynamic_groups',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('filter', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'))
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dynamic_group', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('target_filter', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('open_to_joiners', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.create_index('ix_device_deployments_open_by_deployment', ['deployment_id'],
                              unique=False, postgresql_where=OPEN, sqlite_where=OPEN)

    op.create_table(
        'events',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_events_at', 'events', ['at'])
    op.create_table(
        'webhooks',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('secret', sa.String(length=256), nullable=False),
        sa.Column('types', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_event_id', sa.BigInteger(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('delivered', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'))


def downgrade() -> None:
    op.drop_table('webhooks')
    op.drop_index('ix_events_at', table_name='events')
    op.drop_table('events')
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.drop_index('ix_device_deployments_open_by_deployment')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('open_to_joiners')
        batch_op.drop_column('target_filter')
        batch_op.drop_column('dynamic_group')
    op.drop_table('dynamic_groups')
    op.drop_index('ix_inventory_name', table_name='inventory')
    op.drop_table('inventory_values')
