"""etcd's v3 MVCC store: revisions, generations, compaction, over a KeyValueStore.

The store is ``storage.mvcc.store`` (its docstring is the theory of operation); the values it
hands out are in ``storage.mvcc.model``, its errors in ``storage.mvcc.errors``, the in-memory
index in ``storage.mvcc.index`` and the record layout in ``storage.mvcc.codec``.
"""

from storage.mvcc.errors import Compacted, FutureRevision, MvccError
from storage.mvcc.model import (
    Event,
    EventType,
    HashResult,
    KeyValue,
    RangeResult,
    TxnEvents,
)
from storage.mvcc.store import (
    COMPACTION_KEYS_PER_STEP,
    DEFAULT_PREFIX,
    FIRST_REVISION,
    NO_COMPACTION,
    MvccStore,
    WriteTxn,
)

__all__ = [
    "COMPACTION_KEYS_PER_STEP",
    "DEFAULT_PREFIX",
    "FIRST_REVISION",
    "NO_COMPACTION",
    "Compacted",
    "Event",
    "EventType",
    "FutureRevision",
    "HashResult",
    "KeyValue",
    "MvccError",
    "MvccStore",
    "RangeResult",
    "TxnEvents",
    "WriteTxn",
]
