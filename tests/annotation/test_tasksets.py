"""The task-set module at unit level, against a fake Label Studio: find-or-create by marker,
settings kept in step, batched import with retries, exponential backoff from [review], resends
only what did not land, and the local ledger."""
from __future__ import annotations

import pytest

from photogenic.annotation.lsclient import LabelStudioError, Unavailable
from photogenic.annotation.tasksets import ImportPolicy, TaskSet, server_keys
from photogenic.pipeline.core.config import parse_config

MARK = "[photogenic test=1]"


class FakeLabelStudio:
    """Projects and tasks in memory. `failures` scripts import failures: each entry is "lost" (the
    request failed before the server stored anything) or "landed" (stored, then the reply was lost)."""

    def __init__(self, failures: list[str] | None = None):
        self.projects_: dict[int, dict] = {}
        self.tasks_: dict[int, list[dict]] = {}
        self.failures = list(failures or [])
        self.imports = 0
        self.patches: list[dict] = []

    # the Client surface TaskSet uses
    def projects(self) -> list[dict]:
        return list(self.projects_.values())

    def project(self, pid: int) -> dict:
        return {**self.projects_[pid], "task_number": len(self.tasks_[pid])}

    def post(self, path: str, json=None, **kw):
        assert path == "/api/projects/"
        pid = len(self.projects_) + 1
        self.projects_[pid] = {"id": pid, **json}
        self.tasks_[pid] = []
        return self.projects_[pid]

    def patch(self, path: str, json=None, **kw):
        pid = int(path.strip("/").split("/")[-1])
        self.patches.append(json)
        self.projects_[pid].update(json)
        return self.projects_[pid]

    def tasks(self, pid: int, fields: str = "all", **kw) -> list[dict]:
        return [dict(t) for t in self.tasks_[pid]]

    def task_pages(self, pid: int, fields: str = "all", **kw):
        yield self.tasks(pid, fields)

    def request(self, method: str, path: str, retry: bool = True, **kw):
        assert method == "POST" and path.endswith("/import") and retry is False
        pid = int(path.split("/")[3])
        self.imports += 1
        failure = self.failures.pop(0) if self.failures else None
        if failure == "lost":
            raise Unavailable("connection refused")
        ids = []
        for task in kw["json"]:
            tid = sum(len(v) for v in self.tasks_.values()) + 1
            self.tasks_[pid].append({"id": tid, "data": task["data"]})
            ids.append(tid)
        if failure == "landed":
            raise Unavailable("connection reset after commit")
        return {"task_ids": ids}


def _taskset(fake, tmp_path=None, **policy) -> tuple[TaskSet, list[float]]:
    slept: list[float] = []
    p = ImportPolicy(**{"batch_size": 2, "max_retries": 3, "backoff_s": 1.0, "backoff_max_s": 3.0, **policy})
    ts = TaskSet(fake, MARK, ledger_dir=tmp_path / "ledger" if tmp_path else None, policy=p, sleep=slept.append)
    return ts, slept


def _tasks(keys) -> list[dict]:
    return [{"data": {"key": k}} for k in keys]


def test_policy_comes_from_the_review_config():
    review = parse_config({"review": {"import_batch_size": 7, "max_retries": 2, "backoff_s": 0.25,
                                      "backoff_max_s": 4.0}}).review
    assert ImportPolicy.from_config(review) == ImportPolicy(7, 2, 0.25, 4.0)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    p = ImportPolicy(batch_size=1, max_retries=9, backoff_s=0.5, backoff_max_s=3.0)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (8, 3.0)]:
        for _ in range(20):
            assert base / 2 <= p.delay(attempt) <= base


def test_project_found_by_marker_created_once_and_settings_synced():
    fake = FakeLabelStudio()
    fake.post("/api/projects/", json={"title": "someone else's", "description": "[photogenic test=2]"})
    ts, _ = _taskset(fake)
    create = {"title": "t", "description": f"ours {MARK}"}
    first = ts.ensure(create, {"maximum_annotations": 2, "label_config": "<View/>"})
    again = TaskSet(fake, MARK).ensure(create, {"maximum_annotations": 2, "label_config": "<View/>"})
    assert first["id"] == again["id"] == 2 and len(fake.projects_) == 2 and fake.patches == []
    synced = TaskSet(fake, MARK).ensure(create, {"maximum_annotations": 3, "label_config": "<View/>"})
    assert synced["maximum_annotations"] == 3 and fake.patches == [{"maximum_annotations": 3, "label_config": "<View/>"}]
    with pytest.raises(ValueError, match="marker"):
        TaskSet(fake, "[other]").ensure({"description": "no marker"}, {})


def test_import_in_batches_retries_and_resends_only_what_did_not_land(tmp_path):
    # batch 1 ok; batch 2 lost once, then landed-but-reply-lost (so nothing is resent); batch 3 ok.
    fake = FakeLabelStudio(failures=[None, "lost", "landed", None])
    ts, slept = _taskset(fake, tmp_path)
    ts.ensure({"description": MARK}, {})
    result = ts.import_tasks(_tasks(["a", "b", "c", "d", "e"]))
    keys = [t["data"]["key"] for t in fake.tasks_[ts.project_id]]
    assert sorted(keys) == ["a", "b", "c", "d", "e"] and len(keys) == 5  # no duplicates
    assert (result.imported, result.batches, result.retries) == (5, 2, 2)
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0  # exponential backoff
    assert ts.known_keys() == server_keys(fake, ts.project_id)  # ledger rebuilt and in step
    # Everything known: a second import of the same keys is a no-op for callers that filter.
    todo = [t for t in _tasks(["a", "f"]) if t["data"]["key"] not in ts.known_keys()]
    assert ts.import_tasks(todo).imported == 1 and len(fake.tasks_[ts.project_id]) == 6


def test_import_gives_up_after_max_retries_with_a_resumable_error():
    fake = FakeLabelStudio(failures=["lost"] * 10)
    ts, slept = _taskset(fake, max_retries=2)
    ts.ensure({"description": MARK}, {})
    with pytest.raises(Unavailable, match="rerun the same command to resume"):
        ts.import_tasks(_tasks(["a"]))
    assert fake.imports == 3 and len(slept) == 2


def test_ledger_used_when_in_step_with_the_server(tmp_path):
    fake = FakeLabelStudio()
    ts, _ = _taskset(fake, tmp_path)
    ts.ensure({"description": MARK}, {})
    ts.import_tasks(_tasks(["a", "b", "c"]))
    ts.known_keys()
    fake.tasks = lambda *a, **k: pytest.fail("listed the server although the ledger is in step")
    assert sorted(ts.known_keys()) == ["a", "b", "c"]


def test_project_id_before_ensure_is_a_clear_error():
    with pytest.raises(LabelStudioError, match="ensure"):
        TaskSet(FakeLabelStudio(), MARK).project_id
