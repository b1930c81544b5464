"""The page's own files (CSS, a little JavaScript, the vendored libraries), served from the package.

URLs carry the wantbuild version (``/static/<version>/app.css``), so a browser may keep them for good
(``Cache-Control: immutable``). Only files that ship in ``static/`` are served (a fixed list read once), and each
is compressed once and kept: the Mermaid bundle is 5.5 MB, 1.6 MB gzipped.
"""

from __future__ import annotations

import gzip
import mimetypes
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from wantbuild import __version__

_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".md": "text/plain; charset=utf-8",
}


class StaticFiles:
    """The files under ``wantbuild/_web/static``, by relative path, with a gzipped copy made on first use."""

    def __init__(self) -> None:
        root = resources.files("wantbuild._web") / "static"
        self._files: dict[str, resources.abc.Traversable] = {}
        self._cache: dict[str, tuple[bytes, bytes]] = {}

        def walk(node: resources.abc.Traversable, prefix: str) -> None:
            for child in node.iterdir():
                if child.is_dir():
                    walk(child, f"{prefix}{child.name}/")
                elif not child.name.startswith("."):
                    self._files[prefix + child.name] = child

        walk(root, "")

    def names(self) -> list[str]:
        return sorted(self._files)

    def _load(self, name: str) -> tuple[bytes, bytes]:
        got = self._cache.get(name)
        if got is None:
            raw = self._files[name].read_bytes()
            got = (raw, gzip.compress(raw, compresslevel=6, mtime=0))
            self._cache[name] = got
        return got

    async def serve(self, request: Request) -> Response:
        name = str(request.path_params["path"])
        version = str(request.path_params["version"])
        if name not in self._files:
            return Response(f"no static file {name!r}", status_code=404, media_type="text/plain")
        raw, packed = self._load(name)
        ext = "." + name.rsplit(".", 1)[-1]
        media = _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        headers = {"Cache-Control": "public, max-age=31536000, immutable" if version == __version__ else "no-cache",
                   "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
        if "gzip" in request.headers.get("accept-encoding", "") and len(packed) < len(raw):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type=media, headers=headers)
        return Response(raw, media_type=media, headers=headers)
