"""The web view and HTTP API (the ``web`` extra: ``pip install 'wantbuild[web]'``).

``create_app(source)`` is an ASGI app over a log (a path: followed from a reader of its own) or over a live
runtime (its World, kept current by a post-commit hook). ``wantbuild ui`` serves it with uvicorn;
``wantbuild.web_app(rt)`` is the embedding entry point. See ``docs/web.md``.
"""

from ._app import create_app
from ._graphs import Edge, recorded_edges
from ._observer import Observer

__all__ = ["Edge", "Observer", "create_app", "recorded_edges"]
