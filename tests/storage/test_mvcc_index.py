"""``History``: one key's versions, with sub revisions kept only once one is not 0."""

from __future__ import annotations

from storage.mvcc.index import History, RevisionKeys
from storage.mvcc.model import KeyValue, tombstone


def version(main: int, value: bytes = b"v") -> KeyValue:
    return KeyValue(b"k", main, main, 1, value, 0)


def test_sub_revisions_stay_in_step_with_their_versions() -> None:
    history = History()
    history.add(2, 0, version(2))
    history.add(3, 0, version(3))
    history.add(3, 2, version(3, b"again"))  # the same key twice in one transaction
    history.add(5, 1, tombstone(b"k", 5))
    assert [(main, sub) for main, sub, _ in history.versions()] == [(2, 0), (3, 0), (3, 2), (5, 1)]
    assert history.last_revision() == (5, 1)
    assert history.first_at(3) == 1
    assert history.at(3) == version(3, b"again")
    assert history.at(5) is None  # deleted
    assert history.at(1) is None  # not yet written

    assert history.drop_before(2) == [(2, 0), (3, 0)]
    assert [(main, sub, kv.value) for main, sub, kv in history.versions()] == [
        (3, 2, b"again"),
        (5, 1, b""),
    ]
    assert history.last_revision() == (5, 1)


def test_a_history_of_sub_revisions_zero_reports_them() -> None:
    history = History()
    for main in (4, 7, 9):
        history.add(main, 0, version(main))
    assert list(history.versions()) == [(4, 0, version(4)), (7, 0, version(7)), (9, 0, version(9))]
    assert history.retained_from(8) == 1  # keeps the version live at 8, revision 7
    assert history.drop_before(1) == [(4, 0)]
    assert history.last_revision() == (9, 0)


def test_a_compaction_at_a_tombstone_keeps_nothing_before_it() -> None:
    history = History()
    history.add(2, 0, version(2))
    history.add(4, 0, tombstone(b"k", 4))
    assert history.retained_from(4) == 2
    assert history.retained_from(3) == 0


def test_the_revision_index_answers_from_its_floor_and_drops_below() -> None:
    keys = RevisionKeys(floor=2)
    keys.add(2, (b"a",))
    keys.add(3, (b"a", b"b"))
    keys.add(6, (b"c",))  # revisions 4 and 5 wrote nothing it knows of
    assert [keys.get(revision) for revision in range(1, 8)] == [
        None,
        (b"a",),
        (b"a", b"b"),
        None,
        None,
        (b"c",),
        None,
    ]
    keys.drop_below(4)
    assert keys.floor == 4
    assert [keys.get(revision) for revision in (3, 4, 6)] == [None, None, (b"c",)]
    keys.drop_below(2)  # never back
    assert keys.floor == 4
    keys.add(7, (b"d",))
    assert keys.get(7) == (b"d",)
