"""artifacts: the key that verified the signature (configured name, public key fingerprint)

Revision ID: 0005_signatures
Revises: 0004_roles
Create Date: 2026-11-29 19:05:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_signatures'
down_revision = '0004_roles'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signature_key_name', sa.String(length=1024),
                                      nullable=True))
        batch_op.add_column(sa.Column('signature_key_fingerprint', sa.String(length=64),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('signature_key_fingerprint')
        batch_op.drop_column('signature_key_name')
