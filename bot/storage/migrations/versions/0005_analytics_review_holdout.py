"""analytics: understood intents, daily roll-ups, the reminder experiment, the review inbox, satisfaction

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 02:03:30.776572
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('analytics_cursors',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('analytics_daily',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('inbound', sa.Integer(), nullable=False),
    sa.Column('fallback', sa.Integer(), nullable=False),
    sa.Column('conversations', sa.Integer(), nullable=False),
    sa.Column('handed_off', sa.Integer(), nullable=False),
    sa.Column('handoffs', sa.Integer(), nullable=False),
    sa.Column('urgent', sa.Integer(), nullable=False),
    sa.Column('sla_eligible', sa.Integer(), nullable=False),
    sa.Column('sla_met', sa.Integer(), nullable=False),
    sa.Column('first_response_s', sa.JSON(), nullable=False),
    sa.Column('resolution_s', sa.JSON(), nullable=False),
    sa.Column('satisfaction', sa.JSON(), nullable=False),
    sa.Column('intents', sa.JSON(), nullable=False),
    sa.Column('reminders_planned', sa.Integer(), nullable=False),
    sa.Column('reminders_sent', sa.Integer(), nullable=False),
    sa.Column('reminders_delivered', sa.Integer(), nullable=False),
    sa.Column('reminders_read', sa.Integer(), nullable=False),
    sa.Column('reminders_failed', sa.Integer(), nullable=False),
    sa.Column('reminders_held_out', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'language')
    )
    op.create_table('analytics_rollups',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('rolled_up_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )
    op.create_table('reminder_assignments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('learner_id', sa.String(length=64), nullable=True),
    sa.Column('deadline_id', sa.String(length=64), nullable=True),
    sa.Column('arm', sa.String(length=16), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('on_time', sa.Boolean(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('learner_id', 'deadline_id', name='uq_reminder_assignment_pair')
    )
    with op.batch_alter_table('reminder_assignments', schema=None) as batch_op:
        batch_op.create_index('ix_reminder_assignments_due', ['due_at'], unique=False)
        batch_op.create_index('ix_reminder_assignments_unchecked', ['checked_at', 'due_at'], unique=False)

    op.create_table('review_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('predicted_intent', sa.String(length=64), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('fallback', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=True),
    sa.Column('labelled_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('labelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_messages.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['labelled_by'], ['mentors.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('inbound_id', name='uq_review_items_inbound')
    )
    with op.batch_alter_table('review_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_items_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index('ix_review_items_waiting', ['label', 'id'], unique=False)

    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('satisfaction', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('satisfaction_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('intent', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('intent_confidence', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('fallback', sa.Boolean(), nullable=True))
        batch_op.create_index('ix_inbound_created', ['created_at'], unique=False)
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.create_index('ix_handoffs_created', ['created_at'], unique=False)
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.create_index('ix_reminders_send', ['send_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.drop_index('ix_reminders_send')
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_index('ix_handoffs_created')
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_created')
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_column('fallback')
        batch_op.drop_column('intent_confidence')
        batch_op.drop_column('intent')

    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_column('satisfaction_at')
        batch_op.drop_column('satisfaction')

    with op.batch_alter_table('review_items', schema=None) as batch_op:
        batch_op.drop_index('ix_review_items_waiting')
        batch_op.drop_index(batch_op.f('ix_review_items_contact_id'))

    op.drop_table('review_items')
    with op.batch_alter_table('reminder_assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_reminder_assignments_unchecked')
        batch_op.drop_index('ix_reminder_assignments_due')

    op.drop_table('reminder_assignments')
    op.drop_table('analytics_rollups')
    op.drop_table('analytics_daily')
    op.drop_table('analytics_cursors')
