"""Local ledger of a pass's pushed tasks (key -> task id), so a re-push need not list every task
of a large project (Label Studio lists ~5,000 tasks in tens of seconds).

The ledger is trusted only while it is provably in step with the server: no batch was in flight
when the last push stopped (a `pending` marker is written before each import and removed after
its ids are recorded), it names the same project, and it holds exactly as many tasks (distinct
task ids: a grid task holds several keys) as the project reports. Otherwise the keys are read back from the server and the ledger is rebuilt.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa

from photogenic.pipeline.core.runio import read_json, read_parquet, write_json_atomic, write_parquet_atomic
from photogenic.pipeline.core.storage import as_path

PENDING = "pending.json"


class Ledger:
    def __init__(self, directory: Path, project_id: int):
        self.dir = as_path(directory)  # a local folder or one on a store
        self.project_id = project_id

    def _files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("part-*.parquet"))

    def read(self) -> dict[str, int] | None:
        """key -> task id, or None when the ledger cannot be trusted on its own."""
        if (self.dir / PENDING).exists():
            return None
        meta = read_json(self.dir / "ledger.json")
        if meta is None or meta.get("project_id") != self.project_id:
            return None
        out: dict[str, int] = {}
        for path in self._files():
            t = read_parquet(path)
            out.update(zip(t["key"].to_pylist(), t["task_id"].to_pylist()))
        return out

    def begin(self, n_keys: int) -> None:
        write_json_atomic({"project_id": self.project_id, "keys": n_keys}, self.dir / PENDING)

    def commit(self, keys: list[str], task_ids: list[int]) -> None:
        self._write_part(keys, task_ids)
        _remove(self.dir / PENDING)

    def rebuild(self, mapping: dict[str, int]) -> None:
        """Replace the ledger with what the server holds."""
        old = self._files()
        self._write_part(list(mapping), list(mapping.values()))
        for path in old:
            _remove(path)
        write_json_atomic({"project_id": self.project_id}, self.dir / "ledger.json")
        _remove(self.dir / PENDING)

    def _write_part(self, keys: list[str], task_ids: list[int]) -> None:
        table = pa.table({"key": pa.array(keys, pa.string()), "task_id": pa.array(task_ids, pa.int64())})
        write_parquet_atomic(table, self.dir / f"part-{uuid.uuid4().hex}.parquet")


def _remove(path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
