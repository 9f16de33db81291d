"""file identity: st_dev and st_ino of each indexed file

The web UI serves a file only while it is still the regular file that was indexed
(``indexer.sources.verify_source``: same device and inode, size and mtime). Rows
written before this revision have NULLs and are checked by size and mtime only
until the next ``indexer add`` fills them in.

On SQLite, batch mode adds the columns with a plain ``ALTER TABLE ... ADD COLUMN``
(no table copy, so the keyword-search triggers of 0002 on ``files`` stay).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('files', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('dev', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('inode', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # native DROP COLUMN (SQLite >= 3.35, Postgres): a batch table copy would drop 0002's triggers on files
    op.drop_column('files', 'inode')
    op.drop_column('files', 'dev')
