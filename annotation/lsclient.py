"""A small Label Studio REST client: legacy tokens and personal access tokens, retries, backoff.

Plain `requests` against the documented REST API rather than label-studio-sdk. The SDK 2.x does
retry (connection errors and 408/409/429/5xx, honouring Retry-After) and refreshes personal
access tokens, but by default it retries every method alike, POSTs included, so an import whose
reply was lost is sent twice unless each call passes request_options={"max_retries": 0}; it
also listed 20,000 tasks 1.2-1.4x slower with 2.6x the memory growth and pinned 37 packages
nothing else needs (bench/ls_client.py -> bench/results/ls_client.json; README, "Why not
label-studio-sdk"). Push decides itself what is safe to resend: an import that may have landed
is re-checked, never blindly resent (it is sent with retry=False).

Authentication: a legacy token (40 hex characters, `Authorization: Token ...`) or a personal
access token (PAT, a JWT refresh token: exchanged at /api/token/refresh/ for a short-lived
access token sent as `Authorization: Bearer ...`, refreshed shortly before it expires and once
more on a 401). Which one is detected from the token's shape (`token_kind="auto"`) or given.
Tokens live only in this object and in request headers; nothing here logs headers or prints them.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import random
import re
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator

import requests

from photogenic.annotation import server
from photogenic.annotation.server import Connection

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
RETRY_AFTER_STATUS = {429, 503}
TOKEN_KINDS = ("auto", "legacy", "pat")
REFRESH_PATH = "/api/token/refresh/"
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_LEGACY = re.compile(r"^[0-9a-fA-F]{40}$")
ANNOTATED_QUERY = {"filters": {"conjunction": "or", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "greater", "type": "Number", "value": 0},
]}}


def backoff_delay(attempt: int, backoff_s: float, backoff_max_s: float) -> float:
    """Seconds before retry `attempt` (1, 2, ...): doubling from backoff_s, capped, with jitter
    (so clients that failed together do not retry together)."""
    return min(backoff_max_s, backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), None if absent
    or unparseable; a date in the past is 0."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _jwt_claims(token: str) -> dict:
    """The (unverified) payload of a JWT; {} when it is not one. Only `exp` is read from it."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}


def token_kind(token: str, kind: str = "auto") -> str:
    """"legacy" or "pat" for a token: `kind` when given, else from its shape (a JWT is three
    base64url segments; anything else, e.g. 40 hex characters, is sent as a legacy token)."""
    if kind not in TOKEN_KINDS:
        raise ValueError(f"token kind must be one of {TOKEN_KINDS}, not {kind!r}")
    if kind != "auto":
        return kind
    return "pat" if _JWT.match(token) and not _LEGACY.match(token) else "legacy"


class LabelStudioError(RuntimeError):
    pass


class Unavailable(LabelStudioError):
    """The server could not be reached (or kept failing) after all retries."""


class AuthError(LabelStudioError):
    """The server rejected the credentials (HTTP 401), also after a token refresh."""


class TokenAuth:
    """The Authorization header for one token. A PAT is exchanged for an access token, cached
    until `refresh_margin_s` before its `exp` (servers give 5 minutes by default) and refreshed
    under a lock (threads share a client). repr never shows a token."""

    def __init__(self, token: str, kind: str = "auto", refresh_margin_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        if not token:
            raise ValueError("an API token is required")
        self._token = token
        self.kind = token_kind(token, kind)
        self.refresh_margin_s = refresh_margin_s
        self.clock = clock
        self._access: str | None = None
        self._access_exp = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenAuth(kind={self.kind!r})"

    @property
    def token(self) -> str:
        return self._token

    def needs_refresh(self) -> bool:
        return self.kind == "pat" and (self._access is None
                                       or self.clock() >= self._access_exp - self.refresh_margin_s)

    def expire(self) -> None:
        """Forget the cached access token (after a 401, or to force a refresh)."""
        with self._lock:
            self._access, self._access_exp = None, 0.0

    def set_access(self, access: str) -> None:
        exp = _jwt_claims(access).get("exp")
        with self._lock:
            self._access = access
            # No `exp` claim: assume a short life so it is refreshed well before servers' 5 min.
            self._access_exp = float(exp) if isinstance(exp, (int, float)) else self.clock() + 120.0
            self.refreshes += 1

    def header(self) -> str:
        if self.kind == "legacy":
            return f"Token {self._token}"
        if self._access is None:
            raise LabelStudioError("no access token yet (refresh first)")
        return f"Bearer {self._access}"


class Client:
    """Label Studio's REST API as one user. `token` (default: the connection's) is a legacy token
    or a PAT; `token_kind` forces which ("legacy", "pat"), default "auto" (from its shape)."""

    def __init__(self, conn: Connection, max_retries: int = 8, backoff_s: float = 0.5,
                 backoff_max_s: float = 20.0, timeout_s: float = 300.0, token: str | None = None,
                 token_kind: str = "auto", sleep: Callable[[float], None] = time.sleep):
        self.url = conn.url.rstrip("/")
        self.conn = conn
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.auth = TokenAuth(token or conn.token, token_kind)
        self._refresh_lock = threading.Lock()
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, {self.auth.kind})"

    def as_user(self, token: str, token_kind: str = "auto") -> "Client":
        return Client(self.conn, self.max_retries, self.backoff_s, self.backoff_max_s,
                      self.timeout_s, token=token, token_kind=token_kind, sleep=self.sleep)

    # --- authentication ----------------------------------------------------------------------

    def _auth_header(self) -> str:
        if self.auth.needs_refresh():
            self.refresh_access(stale=None)
        return self.auth.header()

    def refresh_access(self, stale: str | None = None) -> None:
        """Exchange the PAT for a new access token. `stale`: the header a 401 came back for; when
        another thread already replaced it, nothing is done."""
        with self._refresh_lock:
            if stale is None and not self.auth.needs_refresh():
                return
            if stale is not None and not self.auth.needs_refresh() and self.auth.header() != stale:
                return
            try:
                data = self.request("POST", REFRESH_PATH, json={"refresh": self.auth.token}, _auth=False)
            except AuthError:
                raise AuthError(f"{self.url}: the personal access token was rejected by {REFRESH_PATH} "
                                "(revoked, expired, or from another server)") from None
            if not isinstance(data, dict) or not data.get("access"):
                raise LabelStudioError(f"{self.url}{REFRESH_PATH} returned no access token")
            self.auth.set_access(data["access"])
            log.debug("access token refreshed (%s)", self.url)

    # --- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, retry: bool = True,
                on_retry: Callable[[], None] | None = None, _auth: bool = True, **kwargs: Any) -> Any:
        """JSON of a successful response; retries transient failures (connection errors, 408,
        429, 5xx) with exponential backoff, or after the server's Retry-After on 429/503 (capped
        at backoff_max_s). A 401 with a PAT refreshes the access token and resends once (the
        server rejected it before doing anything, so that is safe for any method)."""
        kwargs.setdefault("timeout", self.timeout_s)
        headers = dict(kwargs.pop("headers", None) or {})
        attempts = self.max_retries + 1 if retry else 1
        last: str = ""
        attempt, delay, reauthed = 0, None, False
        while attempt < attempts:
            if delay is not None:
                self.sleep(delay)
                if on_retry:
                    on_retry()
            delay = None
            sent = dict(headers)
            if _auth:
                sent["Authorization"] = self._auth_header()
            try:
                resp = self.session.request(method, self.url + path, headers=sent, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as err:
                last = f"{type(err).__name__}"
            else:
                if resp.status_code == 401 and _auth and self.auth.kind == "pat" and not reauthed:
                    reauthed = True  # an expired or revoked access token: refresh once, resend
                    log.info("%s %s: HTTP 401, refreshing the access token", method, path)
                    self.refresh_access(stale=sent["Authorization"])
                    continue
                if resp.status_code not in RETRY_STATUS:
                    return self._result(method, path, resp)
                last = f"HTTP {resp.status_code}"
                if resp.status_code in RETRY_AFTER_STATUS:
                    wait = retry_after_s(resp.headers.get("Retry-After"))
                    if wait is not None:
                        delay = min(self.backoff_max_s, wait)
            attempt += 1
            log.info("%s %s: %s (attempt %d/%d)", method, path, last, attempt, attempts)
            if delay is None:
                delay = backoff_delay(attempt, self.backoff_s, self.backoff_max_s)
        raise Unavailable(f"Label Studio at {self.url} unavailable: {method} {path} failed "
                          f"{attempts} times (last: {last})")

    def _result(self, method: str, path: str, resp: requests.Response) -> Any:
        if resp.status_code == 401:
            hint = ""
            if self.auth.kind == "legacy" and "legacy token" in resp.text:
                hint = (" (legacy API tokens are disabled on this server: use a personal access "
                        "token, or enable legacy tokens in the organisation's settings)")
            elif self.auth.kind == "pat":
                hint = (" (the access token was refreshed and still rejected: are personal access "
                        "tokens enabled for the organisation? /api/jwt/settings)")
            raise AuthError(f"{method} {path}: HTTP 401{hint}: {resp.text[:300]}")
        if resp.status_code >= 400:
            raise LabelStudioError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

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

    def users(self) -> list[dict]:
        data = self.get("/api/users/", params={"page_size": 1000})
        return data["results"] if isinstance(data, dict) and "results" in data else data


def open_client(config, url: str | None = None, start_local: bool = True) -> "Client":
    """A client of the configured server (`url`, else `[review] url`, else the local one, started
    when `start_local`) with the config's retry policy; ServerError when it cannot be reached."""
    conn = server.connect(config, url, start_local=start_local)
    if not server.healthy(conn.url, timeout=10):
        raise server.ServerError(f"Label Studio at {conn.url} is not reachable")
    return Client(conn, max_retries=config.max_retries, backoff_s=config.backoff_s,
                  backoff_max_s=config.backoff_max_s, timeout_s=config.request_timeout_s)
