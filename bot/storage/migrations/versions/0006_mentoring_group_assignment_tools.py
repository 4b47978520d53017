"""mentoring: mentor group, assignment, saved replies, labels, extensions, satisfaction

`handoffs.satisfaction` and `satisfaction_at` are the analytics' columns too (their migration adds
them): this one adds them only when missing, and leaves them on downgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('handoff_labels',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'name', name='uq_handoff_labels_kind_name')
    )
    op.create_table('mentor_group_updates',
    sa.Column('update_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('update_id')
    )
    with op.batch_alter_table('mentor_group_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mentor_group_updates_received_at'), ['received_at'], unique=False)

    op.create_table('saved_replies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('updated_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['updated_by'], ['mentors.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('language', 'name', name='uq_saved_replies_language_name')
    )
    op.create_table('deadline_extensions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('learner_id', sa.String(length=64), nullable=False),
    sa.Column('deadline_id', sa.String(length=64), nullable=False),
    sa.Column('course_id', sa.String(length=64), nullable=True),
    sa.Column('course_title', sa.String(length=256), nullable=True),
    sa.Column('title', sa.String(length=256), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=True),
    sa.Column('original_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('new_due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('mentor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('handoff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['mentor_id'], ['mentors.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('learner_id', 'deadline_id', name='uq_deadline_extensions_deadline')
    )
    with op.batch_alter_table('deadline_extensions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deadline_extensions_learner_id'), ['learner_id'], unique=False)

    op.create_table('handoff_label_links',
    sa.Column('handoff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('label_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_id'], ['handoff_labels.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('handoff_id', 'label_id')
    )
    with op.batch_alter_table('handoff_label_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handoff_label_links_label_id'), ['label_id'], unique=False)

    op.create_table('mentor_group_topics',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('handoff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('thread_id', sa.BigInteger(), nullable=True),
    sa.Column('card_message_id', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chat_id', 'thread_id', name='uq_mentor_group_topics_thread'),
    sa.UniqueConstraint('handoff_id')
    )
    op.create_table('mentor_group_posts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('handoff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('outbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('note_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('telegram_message_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_messages.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['note_id'], ['mentor_notes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('mentor_group_posts', schema=None) as batch_op:
        batch_op.create_index('ix_mentor_group_posts_pending', ['status', 'handoff_id', 'id'], unique=False)

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('feedback_handoff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))

    existing = {column['name'] for column in sa.inspect(op.get_bind()).get_columns('handoffs')}
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolution', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('offered_mentor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('offered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('offered_ids', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('promised_by', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('promise_followed_up_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('satisfaction_asked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('satisfaction_comment', sa.Text(), nullable=True))
        # the analytics' migration adds these two as well: whichever runs first adds them
        if 'satisfaction' not in existing:
            batch_op.add_column(sa.Column('satisfaction', sa.Integer(), nullable=True))
        if 'satisfaction_at' not in existing:
            batch_op.add_column(sa.Column('satisfaction_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key('fk_handoffs_offered_mentor_id', 'mentors', ['offered_mentor_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('mentors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('capacity', sa.Integer(), server_default=sa.text('5'), nullable=False))
        batch_op.add_column(sa.Column('last_offered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('telegram_user_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('telegram_link_code_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('telegram_link_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint('uq_mentors_telegram_link_code_hash', ['telegram_link_code_hash'])
        batch_op.create_unique_constraint('uq_mentors_telegram_user_id', ['telegram_user_id'])



def downgrade() -> None:
    with op.batch_alter_table('mentors', schema=None) as batch_op:
        batch_op.drop_constraint('uq_mentors_telegram_user_id', type_='unique')
        batch_op.drop_constraint('uq_mentors_telegram_link_code_hash', type_='unique')
        batch_op.drop_column('telegram_link_expires_at')
        batch_op.drop_column('telegram_link_code_hash')
        batch_op.drop_column('telegram_user_id')
        batch_op.drop_column('last_offered_at')
        batch_op.drop_column('capacity')

    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_handoffs_offered_mentor_id', type_='foreignkey')
        batch_op.drop_column('satisfaction_comment')
        batch_op.drop_column('satisfaction_asked_at')
        batch_op.drop_column('escalated_at')
        batch_op.drop_column('promise_followed_up_at')
        batch_op.drop_column('promised_by')
        batch_op.drop_column('first_response_at')
        batch_op.drop_column('offered_ids')
        batch_op.drop_column('offered_at')
        batch_op.drop_column('offered_mentor_id')
        batch_op.drop_column('resolution')

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('feedback_handoff_id')
        batch_op.drop_column('held_since')

    with op.batch_alter_table('mentor_group_posts', schema=None) as batch_op:
        batch_op.drop_index('ix_mentor_group_posts_pending')

    op.drop_table('mentor_group_posts')
    op.drop_table('mentor_group_topics')
    with op.batch_alter_table('handoff_label_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handoff_label_links_label_id'))

    op.drop_table('handoff_label_links')
    with op.batch_alter_table('deadline_extensions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deadline_extensions_learner_id'))

    op.drop_table('deadline_extensions')
    op.drop_table('saved_replies')
    with op.batch_alter_table('mentor_group_updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mentor_group_updates_received_at'))

    op.drop_table('mentor_group_updates')
    op.drop_table('handoff_labels')
