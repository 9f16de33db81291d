"""Open the query API over a data directory: catalog + fresh indices + model -> :class:`SearchService`.

The command line (``python -m retrieval search``, ``retrieval eval``) and the web
app (:mod:`webui.engine`, per catalog revision) build their services here, so
they search the same indices with the same model in the same way. A reader
never writes indices: a stale one is rebuilt in memory (the indexer, holding
the writer lock, saves them).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from retrieval.encoders import canonical_name, create_model
from retrieval.index import VectorIndex, check_compatible
from retrieval.search import Searcher
from retrieval.service import QueryResources, SearchService

from .catalog import Catalog
from .query_port import CatalogPort

_RESOURCES: dict[str, QueryResources] = {}


def resources_for(model_name: str) -> QueryResources:
    """The per-process query resources of a model (caches, locks, re-ranker, calibration)."""
    model = create_model(model_name)
    res = _RESOURCES.get(model.name)
    if res is None or res.model is not model:
        res = _RESOURCES[model.name] = QueryResources(model)
    return res


def service_for(catalog: Catalog, indices: dict[str, VectorIndex], revision: int,
                model: str | None = None) -> SearchService:
    """A service over already loaded ``indices`` of ``catalog``; ``model`` (if given) must be the indices' own."""
    if not indices:
        raise FileNotFoundError(f"nothing is indexed in {catalog.data_dir}; run `python -m indexer add PATH "
                                f"--data-dir {catalog.data_dir}` first")
    if model:  # refuse before loading another model
        for index in indices.values():
            check_compatible(index.manifest, canonical_name(model), {})
    names = {i.manifest.model for i in indices.values()}
    if len(names) != 1:
        raise RuntimeError(f"indices were built with different models ({', '.join(sorted(names))}); run "
                           "`python -m indexer rebuild`")
    res = resources_for(names.pop())
    return SearchService(Searcher(indices, res.model), CatalogPort(catalog), res, revision)


@contextmanager
def open_service(data_dir: Path, model: str | None = None, database_url: str | None = None) -> Iterator[SearchService]:
    """A service over ``data_dir`` for the length of a ``with`` block (the catalog is closed after)."""
    data_dir = Path(data_dir)
    if database_url is None and not (data_dir / "index").is_dir():
        raise FileNotFoundError(f"no index in {data_dir}; run `python -m indexer add PATH --data-dir {data_dir}` first")
    catalog = Catalog(data_dir, database_url=database_url)
    try:
        revision = catalog.state()[2]
        yield service_for(catalog, catalog.fresh_indices(save=False, mmap=True), revision, model)
    finally:
        catalog.close()
