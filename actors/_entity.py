"""What the entity actors share: the log, the World, the kernel, the hooks and the clock.

An entity actor (Want, Partition, JobRun) is a :class:`~actors._kernel.Behavior` registered with
``entity=True``: its state is the entity's committed state in the World, and it changes only through
``ctx.persist(event)``: the transition is checked by the pure transition function (an illegal one raises
``IllegalTransition`` and nothing is written), appended to the event log with the other appends of the same
dispatcher pass, and only once committed adopted, written to the World, announced to the runtime and the user
hooks, and followed by the step's reply and messages. A crash before the commit loses a transition nobody was
told about; a crash after it loses nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventlog import Log

from ._clock import Clock
from ._faults import Faults
from ._world import World

if TYPE_CHECKING:
    from ._kernel import Hooks, Kernel


@dataclass
class EntityEnv:
    """What every entity behaviour may need beyond its cell: the log, the World, the kernel, hooks, the clock."""

    log: Log
    world: World
    kernel: Kernel
    hooks: Hooks
    clock: Clock
    faults: Faults | None = None
    leaving_live: Counter[str] = field(default_factory=Counter)
    """Partitions about to leave Live (being tainted by a taint's wave, leased by a refresh run): a want does not
    become Successful on them meanwhile (see ``WantActor``), whoever commits first."""
