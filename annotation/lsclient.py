"""A small Label Studio REST client with retries and backoff on connection errors and 5xx.

Plain `requests` against the documented REST API rather than label-studio-sdk: push needs to
decide itself what is safe to retry (an import that may have landed is re-checked, never
blindly resent), and the SDK retries neither connection errors nor exposes that choice.
The token lives only in the session's headers; nothing here logs headers or prints it.
"""
from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator

import requests

from photogenic.annotation.server import Connection

log = logging.getLogger(__name__)

RETRY_STATUS = {500, 502, 503, 504, 429}
ANNOTATED_QUERY = {"filters": {"conjunction": "or", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "greater", "type": "Number", "value": 0},
]}}


def backoff_delay(attempt: int, backoff_s: float, backoff_max_s: float) -> float:
    """Seconds before retry `attempt` (1, 2, ...): doubling from backoff_s, capped, with jitter
    (so clients that failed together do not retry together)."""
    return min(backoff_max_s, backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


class LabelStudioError(RuntimeError):
    pass


class Unavailable(LabelStudioError):
    """The server could not be reached (or kept failing) after all retries."""


class Client:
    def __init__(self, conn: Connection, max_retries: int = 8, backoff_s: float = 0.5,
                 backoff_max_s: float = 20.0, timeout_s: float = 300.0, token: str | None = None):
        self.url = conn.url.rstrip("/")
        self.conn = conn
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token or conn.token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def as_user(self, token: str) -> "Client":
        return Client(self.conn, self.max_retries, self.backoff_s, self.backoff_max_s,
                      self.timeout_s, token=token)

    # --- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, retry: bool = True,
                on_retry: Callable[[], None] | None = None, **kwargs: Any) -> Any:
        """JSON of a successful response; retries transient failures with exponential backoff."""
        kwargs.setdefault("timeout", self.timeout_s)
        attempts = self.max_retries + 1 if retry else 1
        last: str = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(backoff_delay(attempt, self.backoff_s, self.backoff_max_s))
                if on_retry:
                    on_retry()
            try:
                resp = self.session.request(method, self.url + path, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as err:
                last = f"{type(err).__name__}"
                log.info("%s %s: %s (attempt %d/%d)", method, path, last, attempt + 1, attempts)
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}"
                log.info("%s %s: %s (attempt %d/%d)", method, path, last, attempt + 1, attempts)
                continue
            if resp.status_code >= 400:
                raise LabelStudioError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
            if resp.status_code == 204 or not resp.content:
                return None
            return resp.json()
        raise Unavailable(f"Label Studio at {self.url} unavailable: {method} {path} failed "
                          f"{attempts} times (last: {last})")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, json=json, **kw)

    # --- API ---------------------------------------------------------------------------------

    def whoami(self) -> dict:
        return self.get("/api/current-user/whoami")

    def projects(self) -> list[dict]:
        out, page = [], 1
        while True:
            data = self.get("/api/projects/", params={"page": page, "page_size": 100})
            results = data["results"] if isinstance(data, dict) else data
            out.extend(results)
            if not isinstance(data, dict) or not data.get("next"):
                return out
            page += 1

    def project(self, project_id: int) -> dict:
        return self.get(f"/api/projects/{project_id}/")

    def tasks(self, project_id: int, fields: str = "all", page_size: int = 5000,
              query: dict | None = None) -> list[dict]:
        """Every task of a project (paginated, deduplicated by id), optionally filtered with a
        data-manager query."""
        return [t for page in self.task_pages(project_id, fields, page_size, query) for t in page]

    def task_pages(self, project_id: int, fields: str = "all", page_size: int = 5000,
                   query: dict | None = None) -> Iterator[list[dict]]:
        """The tasks of a project a page at a time (memory bounded by a page), in id order,
        each task once, optionally filtered with a data-manager query."""
        page, seen = 1, set()
        params = {"project": project_id, "page_size": page_size, "fields": fields}
        if query is not None:
            params["query"] = json.dumps(query)
        while True:
            try:
                data = self.get("/api/tasks/", params={**params, "page": page})
            except LabelStudioError as err:
                if "HTTP 404" in str(err):  # past the last page
                    return
                raise
            batch = data.get("tasks", []) if isinstance(data, dict) else data
            # A task that enters the filter while paging shifts later pages: drop the repeats.
            fresh = [t for t in batch if t["id"] not in seen]
            seen.update(t["id"] for t in fresh)
            if fresh:
                yield fresh
            total = data.get("total") if isinstance(data, dict) else None
            if not batch or (total is not None and page * page_size >= total):
                return
            page += 1

    def server_time(self) -> datetime:
        """The server's clock (its HTTP Date header, 1 s resolution), else this machine's."""
        try:
            resp = self.session.get(self.url + "/api/version", timeout=self.timeout_s)
            return parsedate_to_datetime(resp.headers["Date"]).astimezone(timezone.utc)
        except (requests.RequestException, KeyError, TypeError, ValueError):
            return datetime.now(timezone.utc)

    def annotated_tasks(self, project_id: int, page_size: int = 1000) -> list[dict]:
        """Tasks with at least one annotation (submitted or skipped), with all annotations."""
        return self.tasks(project_id, fields="all", page_size=page_size, query=ANNOTATED_QUERY)

    def users(self) -> list[dict]:
        data = self.get("/api/users/", params={"page_size": 1000})
        return data["results"] if isinstance(data, dict) and "results" in data else data
