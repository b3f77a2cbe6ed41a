"""users' roles, API tokens' scopes, failed logins for throttling

Revision ID: 0004_roles
Revises: 0003_admission
Create Date: 2026-11-29 19:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_roles'
down_revision = '0003_admission'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing users become admins (everyone was one), and their tokens keep a NULL scope:
    # what the user's role allows. No one loses access on upgrade.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False,
                                      server_default='admin'))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=16), nullable=True))
    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_key_at', ['key', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_login_failures_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_failures_at'))
        batch_op.drop_index('ix_login_failures_key_at')
    op.drop_table('login_failures')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('scope')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('role')
