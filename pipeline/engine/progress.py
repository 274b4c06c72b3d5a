"""Progress for long work: shards done, rows/s and an ETA per stage, on the terminal and, for a
cluster job, as records in its log that `thresher status` reads back."""

from __future__ import annotations

import json
import sys
import time

from tqdm import tqdm

RECORD = "THRESHER_PROGRESS "  # a log line that starts so holds one JSON progress record
RECORD_EVERY_S = 2.0


class Progress:
    def __init__(self, enabled: bool = True, stream=None, records=None):
        """`stream`: where progress goes (default: the standard error of the moment, so a caller
        that redirects it is followed). `records`: a text stream (a job's stdout) that gets a
        progress record per stage update, at most every RECORD_EVERY_S seconds and at each
        stage's end."""
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.records = records

    def log(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=self.stream)

    def warn(self, message: str) -> None:
        """Something the user must see even with progress off (-q): data left out, repeated ids."""
        tqdm.write(message, file=self.stream)

    def bar(self, desc: str, total: int) -> "_Bar":
        return _Bar(self, desc, total)


class _Bar:
    def __init__(self, progress: Progress, desc: str, total: int):
        self.start = time.perf_counter()
        self.desc, self.total, self.done, self.rows = desc, total, 0, 0
        self._records, self._last_record = progress.records, float("-inf")
        # tqdm's own line shows shards done/total, elapsed<ETA (from the shard rate) and rows/s.
        self._tq = tqdm(total=total, desc=desc, unit="shard", file=progress.stream, dynamic_ncols=True,
                        disable=not progress.enabled, mininterval=0.5, leave=True)

    def update(self, rows: int) -> None:
        self.rows += rows
        self.done += 1
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self._tq.set_postfix_str(f"{self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s", refresh=False)
        self._tq.update(1)
        self._record(final=self.done >= self.total)

    def _record(self, final: bool) -> None:
        now = time.perf_counter()
        if self._records is None or (not final and now - self._last_record < RECORD_EVERY_S):
            return
        self._last_record = now
        print(RECORD + json.dumps(progress_record(self.desc, self.done, self.total, self.rows, now - self.start)),
              file=self._records, flush=True)

    def close(self) -> float:
        self._tq.close()
        return time.perf_counter() - self.start


def progress_record(stage: str, done: int, total: int, rows: int, elapsed: float) -> dict:
    """Shards done of total, rows and rows/s, and the ETA from the shard rate so far."""
    eta = elapsed / done * (total - done) if done else None
    return {"stage": stage, "shards_done": done, "shards_total": total, "rows": rows,
            "rows_per_s": round(rows / elapsed, 1) if elapsed > 0 else None, "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None, "time": round(time.time(), 1)}


def last_record(log: str) -> dict | None:
    """The latest progress record in a job's log, or None."""
    for line in reversed(log.splitlines()):
        if line.startswith(RECORD):
            try:
                return json.loads(line[len(RECORD):])
            except json.JSONDecodeError:
                continue
    return None
