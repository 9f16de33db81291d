"""Training of the bundled model: data builders (emoji images, synthesised speech),
the contrastive trainer and the export of committed weights.

Only used by `python -m retrieval build-data` and `python -m retrieval train`; the
runtime (search, indexing) never imports this package.
"""
