"""Notices about an archive for its model (counted in the catalog; worded by ``retrieval.model_fit``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Item


def photo_count(session: Session) -> int:
    """Pictures flagged photographic at decode time (``extra.photo``)."""
    q = select(func.count()).select_from(Item).where(Item.modality == "image", Item.extra["photo"].as_boolean())
    return int(session.execute(q).scalar_one())


def notices(session: Session, model: str | None) -> list[str]:
    """What to tell the user once about this catalog and its model (empty when nothing)."""
    from retrieval.model_fit import photo_notice

    notice = photo_notice(model, photo_count(session))
    return [notice] if notice else []
