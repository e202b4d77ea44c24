"""web portal: users, payer links, one-time link codes, failed sign-ins (for the limits)

Revision ID: 0003_web_users
Revises: 0002_device_telemetry
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_web_users"
down_revision = "0002_device_telemetry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('login', sa.String(length=254), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=True),
    sa.Column('must_change_password', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('session_version', sa.Integer(), server_default='0', nullable=False),
    sa.Column('disabled', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('resident', 'operator')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('login', name=op.f('uq_users_login'))
    )
    op.create_table('web_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_failures'))
    )
    with op.batch_alter_table('web_failures', schema=None) as batch_op:
        batch_op.create_index('ix_web_failures_key_at', ['key', 'at'], unique=False)

    op.create_table('link_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('payer_code', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['payer_code'], ['payers.payer_code'], name=op.f('fk_link_codes_payer_code_payers')),
    sa.ForeignKeyConstraint(['used_by'], ['users.id'], name=op.f('fk_link_codes_used_by_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_link_codes_code_hash'))
    )
    with op.batch_alter_table('link_codes', schema=None) as batch_op:
        batch_op.create_index('ix_link_codes_payer_code', ['payer_code'], unique=False)

    op.create_table('payer_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('payer_code', sa.String(length=10), nullable=False),
    sa.Column('link_code_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['link_code_id'], ['link_codes.id'], name=op.f('fk_payer_links_link_code_id_link_codes')),
    sa.ForeignKeyConstraint(['payer_code'], ['payers.payer_code'], name=op.f('fk_payer_links_payer_code_payers')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_payer_links_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payer_links')),
    sa.UniqueConstraint('user_id', 'payer_code', name=op.f('uq_payer_links_user_id_payer_code'))
    )
    with op.batch_alter_table('payer_links', schema=None) as batch_op:
        batch_op.create_index('ix_payer_links_payer_code', ['payer_code'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('payer_links', schema=None) as batch_op:
        batch_op.drop_index('ix_payer_links_payer_code')

    op.drop_table('payer_links')
    with op.batch_alter_table('link_codes', schema=None) as batch_op:
        batch_op.drop_index('ix_link_codes_payer_code')

    op.drop_table('link_codes')
    with op.batch_alter_table('web_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_web_failures_key_at')

    op.drop_table('web_failures')
    op.drop_table('users')
