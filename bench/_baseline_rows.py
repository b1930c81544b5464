"""The rows the append benchmarks' raw baselines write: events interleaved across entities as concurrent actors
append them (round k appends event k of every entity), cut into transactions of ``batch`` rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

EventRow = tuple[int, int, int, int | None, int, bytes, float]
TipRow = tuple[int, int, int]


def interleaved_batches(n_events: int, n_entities: int, batch: int,
                        payload: Callable[[int, int], bytes]) -> Iterator[tuple[list[EventRow], list[TipRow]]]:
    """Per transaction: the event rows (seq, entity_key, entity_seq, prev_seq, type_key 1, payload(i, k), at)
    and the tip updates of the entities it touched (last_seq, last_entity_seq, entity_key). Entity ``i`` has key
    ``i + 1``."""
    per = n_events // n_entities
    last_seq = [0] * n_entities
    seq = 0
    order = ((k, i) for k in range(per) for i in range(n_entities))
    total = per * n_entities
    while seq < total:
        rows: list[EventRow] = []
        touched: dict[int, None] = {}
        at = time.time()
        for k, i in order:
            seq += 1
            rows.append((seq, i + 1, k + 1, last_seq[i] or None, 1, payload(i, k), at))
            last_seq[i] = seq
            touched[i] = None
            if len(rows) == batch:
                break
        yield rows, [(last_seq[i], (last_seq[i] - i - 1) // n_entities + 1, i + 1) for i in touched]
