"""video segments: items.view and keyframe thumbnails

A video is indexed as items of modality ``video``, one per segment, like the
windows of a long recording (``start_s``/``end_s``): ``view`` says which tower
embedded it, ``frame`` (a keyframe, image tower) or ``speech`` (an audio window,
speech tower, with its transcript in ``content``). Items of other modalities
leave it NULL. The FAISS index of an item is ``<modality>-<view>`` when ``view``
is set (``index/video-frame``, ``index/video-speech``), else ``<modality>``.

``thumbnails`` holds the JPEG of each keyframe (kept beside the item like its
embedding, so metadata reads never load it; deleted with it).

On SQLite, batch mode adds the column with a plain ``ALTER TABLE ... ADD COLUMN``
(no table copy, so the keyword-search triggers of 0002 on ``items`` stay).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('view', sa.String(length=8), nullable=True))
    op.create_table(
        'thumbnails',
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('jpeg', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_thumbnails_item_id_items'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('item_id', name=op.f('pk_thumbnails')),
    )


def downgrade() -> None:
    op.drop_table('thumbnails')
    # native DROP COLUMN (SQLite >= 3.35, Postgres): a batch table copy would drop 0002's triggers on items
    op.drop_column('items', 'view')
