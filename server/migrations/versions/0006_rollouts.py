"""rollouts: deployment phases, pause, retries, schedule and maintenance window

Revision ID: 0006_rollouts
Revises: 0005_signatures
Create Date: 2026-11-29 22:30:00

Every deployment has phases now: one made before gets a single phase of all its devices,
started when it was created, with its outcomes counted so far.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_rollouts'
down_revision = '0005_signatures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retries', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('start_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('window_start', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('window_end', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pause_reason', sa.Text(), nullable=True))
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0',
                                      nullable=False))
    op.create_table(
        'deployment_phases',
        sa.Column('deployment_id', sa.String(length=36), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('start_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('after_success', sa.Integer(), nullable=True),
        sa.Column('on_release', sa.Boolean(), nullable=False),
        sa.Column('max_failures', sa.Integer(), nullable=True),
        sa.Column('max_failure_percent', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('successes', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('deployment_id', 'number'),
    )
    # Existing deployments: one phase, started at creation, their outcomes counted; an
    # attempt for each device that ended in success or failure.
    op.execute("""
        INSERT INTO deployment_phases (deployment_id, number, size, on_release, started_at,
                                       successes, failures)
        SELECT d.id, 0,
               (SELECT count(*) FROM device_deployments dd WHERE dd.deployment_id = d.id),
               false, d.created_at,
               (SELECT count(*) FROM device_deployments dd
                WHERE dd.deployment_id = d.id AND dd.status = 'success'),
               (SELECT count(*) FROM device_deployments dd
                WHERE dd.deployment_id = d.id AND dd.status = 'failure')
        FROM deployments d
    """)
    op.execute("UPDATE device_deployments SET attempts = 1 "
               "WHERE status IN ('success', 'failure')")


def downgrade() -> None:
    op.drop_table('deployment_phases')
    with op.batch_alter_table('device_deployments', schema=None) as batch_op:
        batch_op.drop_column('attempts')
        batch_op.drop_column('phase')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        for column in ('pause_reason', 'paused_at', 'window_end', 'window_start', 'start_at',
                       'retries'):
            batch_op.drop_column(column)
