"""Reusable stages: plain, typed functions that also work on their own in a REPL.

Modules:
    http       download URLs with one aiohttp session per worker loop (``download``, ``Response``)
    json       parse JSON and validate records with pydantic, errors naming the byte offset
    files      list and read files under a folder; ``safe_path`` refuses escapes
    images     decode an image with Pillow and describe it (``describe``, ``ImageInfo``)
    aggregate  group-by summaries over Arrow tables (``count_by``, ``summarize``)
    serve      serve a folder (or an aiohttp app) on a loopback port, in a background thread

Each module imports only what it needs, so ``import stages.files`` stays cheap. The engine
never imports this package; dags modules do.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application decides what is shown
