"""Where a log lives: a SQLite file path, or a PostgreSQL URL (``postgresql://user:pw@host/db?schema=name``).

A URL is shown everywhere with its password hidden (:func:`redact`): in errors, in ``path``, in logs.
"""

from __future__ import annotations

import os
import re
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ._errors import EventLogError

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
DEFAULT_SCHEMA: Final = "wantbuild"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,49}")  # + "wantbuild_" is the NOTIFY channel (<= 63)


def is_postgres(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names a PostgreSQL log (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def redact(target: str | os.PathLike[str]) -> str:
    """``target`` for display: a URL's password (in the authority or a ``password=`` parameter) is ``***``."""
    text = os.fspath(target)
    if not is_postgres(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="/:*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(target: str) -> list[str]:
    """The passwords a URL carries (to scrub them from messages a driver writes)."""
    parts = urlsplit(target)
    out = [parts.password] if parts.password else []
    out += [v for k, v in parse_qsl(parts.query) if k == "password" and v]
    return [s for s in out if s] + [quote(s, safe="") for s in out if quote(s, safe="") != s]


class PgTarget:
    """A parsed PostgreSQL log URL: the DSN for the driver, the schema that holds the log, the display text.

    Two query parameters are wantbuild's own and are not passed to the server: ``schema`` (the log's schema,
    default ``wantbuild``) and ``lease_ttl`` (seconds; what ``lease_ttl=`` gives when the caller gives none).
    """

    def __init__(self, url: str) -> None:
        self.display = redact(url)
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        schema = DEFAULT_SCHEMA
        self.lease_ttl: float | None = None
        rest = []
        for k, v in pairs:
            if k == "schema":
                schema = v
            elif k == "lease_ttl":
                try:
                    self.lease_ttl = float(v)
                except ValueError:
                    raise EventLogError(
                        f"{self.display}: lease_ttl={v!r} is not a number of seconds (e.g. ?lease_ttl=10)"
                    ) from None
            else:
                rest.append((k, v))
        if not _SCHEMA_NAME.fullmatch(schema):
            raise EventLogError(
                f"{self.display}: schema {schema!r} is not a valid log schema name; use lower-case letters, "
                "digits and underscores, starting with a letter (e.g. ?schema=wantbuild_reports)"
            )
        self.schema = schema
        self.dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, safe="/:"), parts.fragment))
        self._secrets = secrets_of(url)

    def scrub(self, text: str) -> str:
        """``text`` with any password of the URL replaced by ``***``."""
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def log_label(target: str | os.PathLike[str]) -> str:
    """A short name for the log at ``target``: a file's name, or a PostgreSQL log's schema."""
    if is_postgres(target):
        return PgTarget(str(target)).schema
    return os.path.basename(os.fspath(target))
