"""Per-prefix traffic and space: a top-k sketch, sliding windows of sketches, storage use.

``sketch`` is the space-saving summary (bounded memory, mergeable), ``windows`` the rings of
per-interval sketches (1, 5 and 15 minutes, on a clock the caller passes in), ``prefixes``
how a key is cut into prefixes by depth, ``space`` the per-prefix storage use read from the
MVCC index. Everything here is pure: the member's recorder (``actors.usage``) is the shell.
"""
