"""Client results against the sequential model (the real command semantics, rkv.store, as
the simulator's default state machine): legal histories pass, each kind of wrong answer
fails with its own name."""

from __future__ import annotations

import pytest

from rkv.raft.types import Entry
from rkv.sim.history import History, check_history
from rkv.sim.invariants import InvariantViolation
from rkv.sim.statemachine import ClientCommand, KVStateMachine, StoreStateMachine

ENC = StoreStateMachine()


def Put(client: int, seq: int, key: str, value: str) -> ClientCommand:
    return ClientCommand("put", client, seq, key, value)


def Cas(client: int, seq: int, key: str, expected: str | None, new: str) -> ClientCommand:
    return ClientCommand("cas", client, seq, key, new, expected)


def Delete(client: int, seq: int, key: str) -> ClientCommand:
    return ClientCommand("delete", client, seq, key)


def log(*cmds: ClientCommand | None) -> list[Entry]:
    return [
        Entry(term=1, index=i + 1, data=b"" if c is None else ENC.encode(c))
        for i, c in enumerate(cmds)
    ]


P1 = Put(0, 1, "k", "a")
P2 = Put(1, 1, "k", "b")


def base() -> tuple[History, list[Entry]]:
    h = History()
    w1 = h.invoke(0, "put", "k", "a", t=0, seq=1)
    h.complete_put(w1, 10, index=2, node="n1")
    w2 = h.invoke(1, "put", "k", "b", t=20, seq=1)
    h.complete_put(w2, 30, index=3, node="n1")
    return h, log(None, P1, P2)


def test_legal_history_passes() -> None:
    h, committed = base()
    r = h.invoke(2, "get", "k", None, t=31)
    h.complete_get(r, 40, read_index=3, served_at=3, value="b", node="n2")
    # a read concurrent with nothing, served later than its read index: still fine
    r2 = h.invoke(2, "get", "k", None, t=41)
    h.complete_get(r2, 50, read_index=3, served_at=3, value="b", node="n3")
    # an indeterminate put that never took effect is fine too
    h.invoke(0, "put", "k", "zzz", t=60, seq=2)
    check_history(h, committed)


def test_retried_put_acknowledged_at_its_duplicate_passes() -> None:
    h = History()
    w = h.invoke(0, "put", "k", "a", t=0, seq=1)
    h.complete_put(w, 10, index=3, node="n2")  # the retry's entry; sessions made it a no-op
    check_history(h, log(None, P1, P1))


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        # the read began after put b completed but used an index before it
        (
            "client-stale-read",
            lambda h: h.complete_get(h.invoke(2, "get", "k", None, 31), 40, 2, 2, "a", "n2"),
        ),
        (
            "client-read-early",
            lambda h: h.complete_get(h.invoke(2, "get", "k", None, 31), 40, 3, 2, "a", "n2"),
        ),
        (
            "client-read-value",
            lambda h: h.complete_get(h.invoke(2, "get", "k", None, 31), 40, 3, 3, "a", "n2"),
        ),
        (
            "client-read-uncommitted",
            lambda h: h.complete_get(h.invoke(2, "get", "k", None, 31), 40, 3, 9, "b", "n2"),
        ),
        (
            "client-put-lost",
            lambda h: h.complete_put(h.invoke(3, "put", "k", "c", 31, 1), 40, 7, "n1"),
        ),
        (
            "client-put-wrong-entry",
            lambda h: h.complete_put(h.invoke(3, "put", "k", "c", 31, 1), 40, 2, "n1"),
        ),
    ],
)
def test_wrong_client_results_fail(name: str, mutate) -> None:  # type: ignore[no-untyped-def]
    h, committed = base()
    mutate(h)
    with pytest.raises(InvariantViolation, match=f"^{name}:"):
        check_history(h, committed)


def test_a_read_must_see_a_read_that_completed_before_it() -> None:
    h, committed = base()
    committed = log(None, P1, P2, Put(2, 1, "k", "c"))
    r1 = h.invoke(3, "get", "k", None, t=31)
    h.complete_get(r1, 40, read_index=4, served_at=4, value="c", node="n1")
    r2 = h.invoke(4, "get", "k", None, t=41)
    h.complete_get(r2, 50, read_index=3, served_at=3, value="b", node="n2")
    with pytest.raises(InvariantViolation, match=r"^client-stale-read:"):
        check_history(h, committed)


def test_sessions_make_a_retried_write_a_no_op_in_the_model() -> None:
    h = History()
    w = h.invoke(0, "put", "k", "a", t=0, seq=1)
    h.complete_put(w, 10, index=1, node="n1")
    r = h.invoke(1, "get", "k", None, t=11)
    # the retry of put a (index 3) must not undo put x (index 2)
    h.complete_get(r, 20, read_index=3, served_at=3, value="x", node="n1")
    check_history(h, log(P1, Put(9, 1, "k", "x"), P1))


def cas_delete_history() -> tuple[History, list[Entry]]:
    """put a; cas a->b (swaps); cas a->c (fails); delete (existed); get -> None."""
    h = History()
    ops = [
        (h.invoke(0, "put", "k", "a", 0, 1), 1, None),
        (h.invoke(0, "cas", "k", "b", 10, 2, expected="a"), 2, True),
        (h.invoke(1, "cas", "k", "c", 20, 1, expected="a"), 3, False),
        (h.invoke(1, "delete", "k", None, 30, 2), 4, True),
    ]
    for op, index, result in ops:
        h.complete_put(op, op.invoke_t + 5, index, "n1", result)
    return h, log(Put(0, 1, "k", "a"), Cas(0, 2, "k", "a", "b"), Cas(1, 1, "k", "a", "c"),
                  Delete(1, 2, "k"))  # fmt: skip


def test_cas_and_delete_results_and_values_pass() -> None:
    h, committed = cas_delete_history()
    r = h.invoke(2, "get", "k", None, 12)
    h.complete_get(r, 14, read_index=2, served_at=2, value="b", node="n2")
    r = h.invoke(2, "get", "k", None, 40)
    h.complete_get(r, 41, read_index=4, served_at=4, value=None, node="n2")
    check_history(h, committed)


@pytest.mark.parametrize(
    ("which", "told"),
    [(1, False), (2, True), (3, False)],  # the cas that swapped, failed; delete
)
def test_a_wrong_cas_or_delete_result_fails(which: int, told: bool) -> None:
    h, committed = cas_delete_history()
    h.ops[which].result = told
    with pytest.raises(InvariantViolation, match=r"^client-write-result:"):
        check_history(h, committed)


def test_a_read_of_a_deleted_key_must_be_absent() -> None:
    h, committed = cas_delete_history()
    r = h.invoke(2, "get", "k", None, 40)
    h.complete_get(r, 41, read_index=4, served_at=4, value="b", node="n2")
    with pytest.raises(InvariantViolation, match=r"^client-read-value:"):
        check_history(h, committed)


def test_the_toy_state_machine_is_a_model_too() -> None:
    toy = KVStateMachine()
    committed = [Entry(1, 1, toy.encode(Put(0, 1, "k", "a")))]
    h = History()
    h.complete_put(h.invoke(0, "put", "k", "a", 0, 1), 5, 1, "n1")
    check_history(h, committed, KVStateMachine)
    with pytest.raises(InvariantViolation, match=r"^client-put-wrong-entry:"):
        check_history(h, committed)  # the real store cannot read toy commands
