"""The supervisor's wait index, tested against a plain model: waiters and the refs each still waits for."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from supervisor._waits import WaitIndex

REFS = st.sampled_from([f"r{i}" for i in range(6)])
WAITERS = st.sampled_from([f"w{i}" for i in range(5)])


class WaitIndexMachine(RuleBasedStateMachine):
    """Waits, arrivals, failures and forgets in any order; the model is one dict waiter -> refs left."""

    def __init__(self) -> None:
        super().__init__()
        self.idx = WaitIndex()
        self.model: dict[str, set[str]] = {}

    @rule(waiter=WAITERS, refs=st.sets(REFS, min_size=1))
    def wait(self, waiter: str, refs: set[str]) -> None:
        if waiter in self.model:
            return  # the supervisor never waits twice for one waiter (it checks ``in`` first)
        self.idx.wait(waiter, iter(refs))
        self.model[waiter] = set(refs)

    @rule(ref=REFS)
    def arrived(self, ref: str) -> None:
        done = []
        for w, left in self.model.items():
            left.discard(ref)
            if not left:
                done.append(w)
        for w in done:
            del self.model[w]
        assert sorted(done) == self.idx.arrived(ref)

    @rule(ref=REFS)
    def failed(self, ref: str) -> None:
        hit = sorted(w for w, left in self.model.items() if ref in left)
        for w in hit:
            del self.model[w]
        assert hit == self.idx.failed(ref)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(sorted(self.model)))
        del self.model[waiter]
        self.idx.forget(waiter)

    @rule(waiter=WAITERS)
    def forget_any(self, waiter: str) -> None:
        self.model.pop(waiter, None)
        self.idx.forget(waiter)

    @invariant()
    def same_as_model(self) -> None:
        assert self.model == self.idx.missing
        assert len(self.idx) == len(self.model)
        assert all((w in self.idx) == (w in self.model) for w in ("w0", "w1", "w4"))

    @invariant()
    def reverse_map_exact(self) -> None:
        expected: dict[str, set[str]] = {}
        for w, left in self.model.items():
            for r in left:
                expected.setdefault(r, set()).add(w)
        # one waiter is held as itself, two or more as a set: no stale entry, no empty set, no set of one
        assert {r: next(iter(ws)) if len(ws) == 1 else ws for r, ws in expected.items()} == self.idx.by_ref
        assert all({r: set(self.idx.waiters(r)) for r in expected}.get(r) == ws for r, ws in expected.items())
        assert self.idx.waiters("nowhere") == ()


WaitIndexMachine.TestCase.settings = settings(max_examples=200, deadline=None, database=None)
TestWaitIndex = WaitIndexMachine.TestCase


def test_failed_waiter_leaves_its_other_refs() -> None:
    """A waiter dropped because one ref failed is no longer listed under the other refs it waited for."""
    idx = WaitIndex()
    idx.wait("a", ["x", "y"])
    idx.wait("b", ["y"])
    assert idx.failed("x") == ["a"]
    assert idx.by_ref == {"y": "b"}
    assert idx.waiters("y") == ("b",)
    assert idx.arrived("y") == ["b"]
    assert not idx.by_ref
    assert not idx.missing


def test_second_waiter_makes_a_set_and_one_left_goes_back() -> None:
    """A ref two waiters wait for maps to a set of both; when one stops waiting it maps to the other alone."""
    idx = WaitIndex()
    idx.wait("a", ["x"])
    assert idx.by_ref == {"x": "a"}
    idx.wait("b", ["x", "y"])
    assert idx.by_ref == {"x": {"a", "b"}, "y": "b"}
    idx.forget("a")
    assert idx.by_ref == {"x": "b", "y": "b"}
    assert idx.arrived("x") == []
    assert idx.arrived("y") == ["b"]
    assert not idx.by_ref
    assert not idx.missing
