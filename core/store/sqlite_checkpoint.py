"""WAL checkpoints on a thread of their own, off the commit path.

By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: that
commit copies the WAL back into the database file and syncs both (with synchronous =
NORMAL it is the only place that syncs), and every post of its group commit waits for
it. On fanout-10k with rooms of 20 the WAL passes 1,000 pages several times a second, and
that made the commit's p99 4–6 ms against 0.6 ms without (bench/README.md, 2026-12-04
late). So the store's connections set ``wal_autocheckpoint = 0`` and this thread, with a
connection of its own, checkpoints every ``interval_s`` in two steps:

* PASSIVE copies the WAL back and syncs without waiting for anyone or blocking anyone;
* once a PASSIVE try has copied the whole WAL, RESTART lets the next commit write the WAL
  from its start again. With nothing left to copy it does not sync, and with a busy
  timeout of 0 it never waits: it takes the write lock for microseconds or answers busy
  and is tried again. (Waiting in SQLite's busy handler sleeps 1 ms and more, and new
  commits wait behind a pending RESTART: with two workers on one file that made the
  commit's p99 worse than SQLite's own checkpoints.) Without RESTART a busy WAL is never
  wholly copied at the moment a commit begins, and grows without end (600 MB in a 30 s
  run). Past ``WAL_RESTART_PAGES`` RESTART also copies the tail that commits keep adding.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

# Between rounds the WAL gathers about a second of writes: a few MB at full posting rate,
# and a round's sync costs the disk one flush a second per process.
CHECKPOINT_INTERVAL_S = 1.0
# Tries per round: a try after the first copies only the commits that landed during the
# one before (a few pages), so one usually finds nothing left and can restart the WAL.
TRIES = 4
# A WAL this long (~32 MB of 4 KB pages) is restarted even when commits keep a tail in it:
# the bound of its size under any write rate.
WAL_RESTART_PAGES = 8_000
# The WAL file is cut back to this at a restart when a burst made it longer; the usual
# second of writes stays under it, so the file is not grown again every second.
WAL_KEEP_BYTES = WAL_RESTART_PAGES * 4096
# A WAL still this long after a round (~256 MB of 4 KB pages) means a read has held an
# old snapshot for long; it is said in the log, and the next round copies the rest.
WAL_WARN_PAGES = 64_000


class WalCheckpointer:
    """One thread that checkpoints one SQLite file's WAL every ``interval_s``."""

    def __init__(self, path: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pchat-sqlite-wal", daemon=True)
        self.rounds = 0  # rounds that ran to the end, busy or not (tests and logs read it)
        self._warned = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread after its current round (a round never waits for a lock)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA busy_timeout = 0")  # never wait: see the module's doc
        except sqlite3.Error as exc:
            log.warning("WAL checkpoints of %s are off: cannot open it (%s)", self._path, exc)
            return
        try:
            while not self._stop.wait(self._interval_s):
                self._round(conn)
        finally:
            conn.close()

    def _round(self, conn: sqlite3.Connection) -> None:
        try:
            for _ in range(TRIES):
                passive = conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                _busy, wal_pages, copied = passive.fetchone()
                if copied < wal_pages:
                    continue  # commits landed meanwhile: the next try copies them
                restart = conn.execute("PRAGMA wal_checkpoint(RESTART)")
                busy, wal_pages, copied = restart.fetchone()
                if not busy:
                    break
            else:
                if wal_pages > WAL_RESTART_PAGES:
                    restart = conn.execute("PRAGMA wal_checkpoint(RESTART)")
                    _busy, wal_pages, copied = restart.fetchone()
        except sqlite3.Error as exc:  # e.g. the disk is full: the next round tries again
            log.warning("WAL checkpoint of %s failed: %s; trying again", self._path, exc)
            return
        self.rounds += 1
        left = wal_pages - copied
        if left > WAL_WARN_PAGES and not self._warned:
            self._warned = True
            log.warning(
                "the WAL of %s still holds %d pages after a checkpoint: a long read holds"
                " an old snapshot; the checkpoint copies the rest once it ends",
                self._path,
                left,
            )
        elif left <= WAL_WARN_PAGES:
            self._warned = False
