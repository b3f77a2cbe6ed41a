"""admission: identities unique by their hash, a key's source address, a token's key

Revision ID: 0003_admission
Revises: 0002
Create Date: 2026-11-29 19:20:00
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0003_admission'
down_revision = '0002'
branch_labels = None
depends_on = None

# 0001 left the unique constraint on devices.identity unnamed: PostgreSQL named it, SQLite
# did not, and batch mode finds it there by this convention.
UNNAMED_UNIQUE = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _identity_unique(dialect: str) -> str:
    return 'devices_identity_key' if dialect == 'postgresql' else 'uq_devices_identity'


def upgrade() -> None:
    connection = op.get_bind()
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_hash', sa.String(length=64), nullable=True))
    devices = sa.table('devices', sa.column('id'), sa.column('identity'),
                       sa.column('identity_hash'))
    for device_id, identity in connection.execute(sa.select(devices.c.id, devices.c.identity)):
        connection.execute(devices.update().where(devices.c.id == device_id).values(
            identity_hash=hashlib.sha256(identity.encode()).hexdigest()))
    with op.batch_alter_table('devices', schema=None,
                              naming_convention=UNNAMED_UNIQUE) as batch_op:
        batch_op.alter_column('identity_hash', existing_type=sa.String(length=64),
                              nullable=False)
        batch_op.drop_constraint(_identity_unique(connection.dialect.name), type_='unique')
        batch_op.create_index('ix_devices_identity_hash', ['identity_hash'], unique=True)

    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_auth_sets_source_created_at', ['source', 'created_at'],
                              unique=False)

    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_set_id', sa.String(length=36), nullable=True))
    # A device's live tokens were issued to its accepted key (one at most); a token of a
    # device without one can never pass again, so it loses nothing by being revoked.
    op.execute("UPDATE tokens SET auth_set_id = (SELECT auth_sets.id FROM auth_sets "
               "WHERE auth_sets.device_id = tokens.subject AND auth_sets.status = 'accepted') "
               "WHERE kind = 'device'")
    op.execute("UPDATE tokens SET revoked_at = CURRENT_TIMESTAMP "
               "WHERE kind = 'device' AND auth_set_id IS NULL AND revoked_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('auth_set_id')
    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.drop_index('ix_auth_sets_source_created_at')
        batch_op.drop_column('source')
    with op.batch_alter_table('devices', schema=None,
                              naming_convention=UNNAMED_UNIQUE) as batch_op:
        batch_op.drop_index('ix_devices_identity_hash')
        batch_op.create_unique_constraint(_identity_unique(op.get_bind().dialect.name),
                                          ['identity'])
        batch_op.drop_column('identity_hash')
