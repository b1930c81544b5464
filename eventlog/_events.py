"""Typed events: frozen records with a name and a version, encoded and decoded by the log.

An event type is a ``msgspec.Struct`` subclass of :class:`Event` declared with the :func:`event` decorator::

    @event("WantCreated", version=1)
    class WantCreated(Event):
        refs: tuple[str, ...]
        comment: str = ""

The decorator registers the class in :data:`REGISTRY` under ``(name, version)``. The log stores the name and
version beside the JSON payload, and decodes a row back into exactly that class, with its field types
checked. We use msgspec rather than dataclasses + json because it validates while decoding (a payload that
does not match its type is an error, not a half-built object) and is several times faster, which the replay
targets need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec

from ._errors import CorruptLogError, EventLogError


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base class of every event type; declare subclasses with :func:`event`."""

    event_name: ClassVar[str] = ""
    event_version: ClassVar[int] = 0


E = TypeVar("E", bound=type[Event])


def event(name: str, version: int = 1, registry: EventRegistry | None = None) -> Callable[[E], E]:
    """Class decorator: name and version an :class:`Event` subclass and register it."""
    if not name or not name.isidentifier():
        raise EventLogError(f"event name {name!r} must be a non-empty identifier")
    if version < 1:
        raise EventLogError(f"event {name}: version must be >= 1, got {version}")

    def decorate(cls: E) -> E:
        cls.event_name = name
        cls.event_version = version
        (registry if registry is not None else REGISTRY).register(cls)
        return cls

    return decorate


class EventRegistry:
    """Maps ``(name, version)`` to event classes and holds their encoders and decoders."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], type[Event]] = {}
        self._decoders: dict[type[Event], msgspec.json.Decoder[Any]] = {}
        self._strict: dict[type[Event], msgspec.json.Decoder[Any]] = {}
        self._encoder = msgspec.json.Encoder()

    def register(self, cls: type[Event]) -> None:
        key = (cls.event_name, cls.event_version)
        existing = self._by_key.get(key)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise EventLogError(
                f"event {cls.event_name} v{cls.event_version} is declared twice: "
                f"{existing.__module__}.{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        self._by_key[key] = cls
        self._decoders[cls] = msgspec.json.Decoder(cls)
        self._strict.pop(cls, None)

    def lookup(self, name: str, version: int, seq: int | None = None) -> type[Event]:
        try:
            return self._by_key[(name, version)]
        except KeyError:
            known = sorted(v for (n, v) in self._by_key if n == name)
            hint = f" (known versions: {known})" if known else ""
            raise CorruptLogError(f"unknown event type {name} v{version}{hint}", seq) from None

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    @property
    def encoder(self) -> msgspec.json.Encoder:
        """The shared JSON encoder, for hot loops that call ``encoder.encode`` directly."""
        return self._encoder

    def decode(self, cls: type[Event], payload: bytes | str, seq: int | None = None) -> Event:
        try:
            return self._decoders[cls].decode(payload)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptLogError(f"undecodable payload for {cls.event_name} v{cls.event_version}: {e}", seq) from e

    def decoder_for(self, cls: type[Event]) -> msgspec.json.Decoder[Any]:
        """The raw decoder of one type, for hot loops that handle errors themselves."""
        return self._decoders[cls]

    def strict_decoder_for(self, cls: type[Event]) -> msgspec.json.Decoder[Any]:
        """A decoder of ``cls`` that also refuses fields the type does not have (what ``verify`` uses).

        The ordinary decoder ignores unknown fields, as msgspec does by default: a payload that holds none of
        its type's fields then decodes into an event made of defaults. Strictness costs a subclass per type, so
        it is kept off the replay path; the decoded object is of that subclass and is only used to check.
        """
        dec = self._strict.get(cls)
        if dec is None:
            strict = type(cls.__name__, (cls,), {"__module__": cls.__module__}, forbid_unknown_fields=True)
            dec = self._strict[cls] = msgspec.json.Decoder(strict)
        return dec

    def all(self) -> list[type[Event]]:
        return list(self._by_key.values())


REGISTRY = EventRegistry()
"""The process-wide registry that every :class:`Event` subclass joins when it is defined."""
