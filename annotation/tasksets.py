"""A task set: one Label Studio project, found again on every run by a marker in its description,
its settings kept in step with the config, and its tasks imported once per key, ever.

Used by the review passes (`annotation.push`) and the base-vs-tuned A/B review
(`training.eval_ab`). Imports go in batches; a batch that fails may still have landed (the server
died after its commit), so before it is resent it is checked against the keys the project holds,
and only the missing tasks go again, after an exponential backoff taken from `[review]`.

A task holds one item (`data[key_field]`) or, for a grid task, several (`data["keys"]`); the
item key -> task id map is the server's; an optional local `Ledger` saves listing a large project
on every push, and is trusted only while provably in step with the server (see `ledger.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from photogenic.annotation.ledger import Ledger
from photogenic.annotation.lsclient import Client, LabelStudioError, Unavailable, backoff_delay
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.storage import as_path


@dataclass(frozen=True)
class ImportPolicy:
    """Batch size and retry schedule of imports (the `[review]` keys of the same names)."""

    batch_size: int
    max_retries: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def from_config(cls, config: ReviewConfig) -> "ImportPolicy":
        return cls(batch_size=config.import_batch_size, max_retries=config.max_retries,
                   backoff_s=config.backoff_s, backoff_max_s=config.backoff_max_s)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_s, self.backoff_max_s)


@dataclass
class ImportResult:
    imported: int = 0
    batches: int = 0
    retries: int = 0


GRID_KEYS = "keys"  # task data field listing the items of a grid task, in slot order


def task_keys(data: dict, key_field: str = "key") -> list[str]:
    """The item keys a task holds: its grid's keys, else its one key (none without one)."""
    if isinstance(data.get(GRID_KEYS), list):
        return [str(k) for k in data[GRID_KEYS]]
    return [str(data[key_field])] if data.get(key_field) is not None else []


def server_keys(client: Client, project_id: int, key_field: str = "key") -> dict[str, int]:
    """item key -> task id for every task in the project (the first task of a key wins)."""
    out: dict[str, int] = {}
    for page in client.task_pages(project_id, fields="task_only"):
        for task in page:
            for key in task_keys(task.get("data") or {}, key_field):
                out.setdefault(key, task["id"])
    return out


class TaskSet:
    """The project with `marker` in its description, and its tasks keyed by `data[key_field]`."""

    def __init__(self, client: Client, marker: str, key_field: str = "key",
                 ledger_dir: Path | None = None, policy: ImportPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.marker = marker
        self.key_field = key_field
        self.ledger_dir = as_path(ledger_dir) if ledger_dir is not None else None
        self.policy = policy or ImportPolicy.from_config(ReviewConfig())
        self.sleep = sleep
        self.project: dict | None = None

    @property
    def project_id(self) -> int:
        if self.project is None:
            raise LabelStudioError(f"no project with marker {self.marker} yet: ensure() it first")
        return self.project["id"]

    # --- the project ---------------------------------------------------------------------------

    def find(self) -> dict | None:
        self.project = next((p for p in self.client.projects()
                             if self.marker in (p.get("description") or "")), None)
        return self.project

    def ensure(self, create: dict[str, Any], settings: dict[str, Any]) -> dict:
        """The project, created from `create` + `settings` if missing; `settings` (label config,
        overlap, ...) are patched in when the project differs from them."""
        if self.marker not in create.get("description", ""):
            raise ValueError("the description of a new task set must carry its marker")
        project = self.find()
        if project is None:
            project = self.client.post("/api/projects/", json={**create, **settings})
        elif any(project.get(k) != v for k, v in settings.items()):
            try:
                project = self.client.patch(f"/api/projects/{project['id']}/", json=settings)
            except LabelStudioError as err:
                raise LabelStudioError(f"cannot update project {project['id']} to the configured "
                                       f"settings ({', '.join(settings)}): {err}") from None
        self.project = project
        return project

    def ensure_local_storage(self, path: Path) -> None:
        """A local-files import storage over `path` (needed for its files to be served)."""
        client, pid = self.client, self.project_id
        existing = client.get("/api/storages/localfiles/", params={"project": pid})
        if any(Path(s.get("path", "")) == path for s in existing or []):
            return
        try:
            client.post("/api/storages/localfiles/", json={
                "project": pid, "path": str(path), "title": "photogenic review media",
                "use_blob_urls": True, "regex_filter": r".*\.jpg$",
            })
        except LabelStudioError as err:
            raise LabelStudioError(f"cannot add local-files storage {path}: {err}. The Label Studio "
                                   "server must run with LOCAL_FILES_SERVING_ENABLED=true and "
                                   "LOCAL_FILES_DOCUMENT_ROOT set to a parent of this path") from None

    def ensure_s3_storage(self, body: dict) -> None:
        """An S3 import storage (`body`: objectstore.storage_body) over a bucket prefix, so Label
        Studio resolves its s3:// task URLs to presigned ones. Never synced: tasks are imported
        through the API, the storage only serves their images."""
        client, pid = self.client, self.project_id
        existing = client.get("/api/storages/s3/", params={"project": pid}) or []
        if any(s.get("bucket") == body["bucket"] and (s.get("prefix") or "").strip("/") == body["prefix"]
               for s in existing):
            return
        try:
            client.post("/api/storages/s3/", json=body)
        except LabelStudioError as err:
            # The message is Label Studio's; the request body (with the credentials) is never shown.
            raise LabelStudioError(f"cannot add S3 storage s3://{body['bucket']}/{body['prefix']}: {err}. "
                                   "Label Studio must reach the store with the credentials of this "
                                   "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); a private "
                                   "endpoint (127.0.0.1, a LAN) must be its operator endpoint "
                                   "LABEL_STUDIO_S3_ENDPOINT (the local server sets it from "
                                   "[review] s3_endpoint or AWS_ENDPOINT_URL when it starts)") from None

    # --- its tasks ----------------------------------------------------------------------------

    def _ledger(self) -> Ledger | None:
        return Ledger(self.ledger_dir, self.project_id) if self.ledger_dir is not None else None

    def known_keys(self) -> dict[str, int]:
        """item key -> task id of the project: the local ledger when it is in step with the server
        (same task count, no batch in flight), else read from the server (ledger rebuilt)."""
        ledger = self._ledger()
        local = ledger.read() if ledger else None
        if local is not None and self.client.project(self.project_id).get("task_number") == len(set(local.values())):
            return local
        mapping = server_keys(self.client, self.project_id, self.key_field)
        if ledger:
            ledger.rebuild(mapping)
        return mapping

    def _keys(self, task: dict) -> list[str]:
        return task_keys(task["data"], self.key_field)

    def import_tasks(self, tasks: list[dict], echo: Callable[[str], None] = lambda m: None,
                     progress: Callable[[int, int], None] | None = None) -> ImportResult:
        """Import the tasks whose keys the project lacks (callers pass only new ones)."""
        result = ImportResult()
        size = self.policy.batch_size
        for start in range(0, len(tasks), size):
            self._import_batch(tasks[start:start + size], result, echo)
            if progress:
                progress(min(start + size, len(tasks)), len(tasks))
        return result

    def _import_batch(self, batch: list[dict], result: ImportResult, echo: Callable[[str], None]) -> None:
        ledger = self._ledger()
        attempt = 0
        while batch:
            keys = [self._keys(t) for t in batch]
            if ledger:
                ledger.begin(sum(map(len, keys)))
            try:
                resp = self.client.request("POST", f"/api/projects/{self.project_id}/import", retry=False,
                                           params={"return_task_ids": "true"}, json=batch)
            except Unavailable as err:
                attempt += 1
                result.retries += 1
                if attempt > self.policy.max_retries:
                    raise Unavailable(f"{err}; import stopped after {result.imported} new task(s), "
                                      "rerun the same command to resume (no duplicates)") from None
                delay = self.policy.delay(attempt)
                echo(f"import batch failed ({err}); retrying in {delay:.1f}s")
                self.sleep(delay)
                landed = self.known_keys()  # a pending ledger marker: read from the server
                before = len(batch)
                # A task's items land together: its first key tells.
                batch = [t for t in batch if self._keys(t)[0] not in landed]
                result.imported += before - len(batch)
                continue
            ids = (resp or {}).get("task_ids") or []
            if ledger and len(ids) == len(keys):
                ledger.commit([k for ks in keys for k in ks], [i for ks, i in zip(keys, ids) for _ in ks])
            elif ledger:  # no ids back (older servers): leave the marker, the next read lists the server
                echo("import returned no task ids; the ledger will be rebuilt from the server")
            result.imported += len(batch)
            result.batches += 1
            return
