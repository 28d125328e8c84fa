"""The Label Studio client's tokens and retries.

Unit level, against a scripted fake session: legacy token vs personal access token (PAT, a JWT
refresh token) detection, access-token refresh before expiry and once on a 401, 408 retried,
Retry-After (seconds or HTTP date) honoured on 429/503 and capped, tokens never in logs, reprs
or errors. Then against the session's real Label Studio 1.23: a PAT created for a new user through
/api/token/, used by our Client to list projects, still working after its access token is
refreshed (forced by expiring the cached one, and by a rejected one answered with 401).
"""
from __future__ import annotations

import base64
import email.utils
import json
import logging
import secrets
import time

import pytest

from photogenic.annotation.lsclient import (
    REFRESH_PATH, AuthError, Client, LabelStudioError, Unavailable, retry_after_s, token_kind,
)
from photogenic.annotation.server import Connection

pytest_plugins = ["tests.annotation.helpers"]

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def fake_jwt(token_type: str, exp: float, salt: str = "") -> str:
    return ".".join([_b64({"alg": "HS256", "typ": "JWT"}),
                     _b64({"token_type": token_type, "exp": int(exp), "jti": salt or secrets.token_hex(4)}),
                     secrets.token_urlsafe(32).replace("=", "")])


class Resp:
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status_code = status
        self.headers = headers or {}
        self._body = body
        self.content = b"" if body is None else json.dumps(body).encode()
        self.text = self.content.decode()

    def json(self):
        return self._body


class FakeSession:
    """Answers from a script: each entry a Resp or an exception, consumed per request; when the
    script is empty a refresh gets a fresh access token and anything else 200 {"ok": True}.
    Records (method, path, Authorization) of every request."""

    def __init__(self, script=(), access_ttl_s: float = 300.0, valid_refresh: str | None = None):
        self.script = list(script)
        self.sent: list[tuple[str, str, str | None]] = []
        self.access_ttl_s = access_ttl_s
        self.valid_refresh = valid_refresh
        self.issued: list[str] = []

    def request(self, method, url, headers=None, **kw):
        path = url.split("://", 1)[1].split("/", 1)[1]
        self.sent.append((method, "/" + path, (headers or {}).get("Authorization")))
        if "/" + path == REFRESH_PATH:
            if self.valid_refresh is not None and kw["json"]["refresh"] != self.valid_refresh:
                return Resp(401, {"detail": "Token is invalid or expired", "code": "token_not_valid"})
            access = fake_jwt("access", time.time() + self.access_ttl_s)
            self.issued.append(access)
            return Resp(200, {"access": access})
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return Resp(200, {"ok": True})


def _client(token: str, script=(), **kw) -> tuple[Client, FakeSession, list[float]]:
    slept: list[float] = []
    fake_kw = {k: kw.pop(k) for k in ("access_ttl_s", "valid_refresh") if k in kw}
    client = Client(Connection(url="http://ls.test", token=token, local_files_root=None),
                    sleep=slept.append, **{"max_retries": 3, "backoff_s": 1.0, "backoff_max_s": 8.0, **kw})
    client.session = FakeSession(script, **fake_kw)
    return client, client.session, slept


# --- unit: detection, refresh, retries -------------------------------------------------------


def test_token_kind_from_shape_or_explicit():
    pat = fake_jwt("refresh", time.time() + 3600)
    assert token_kind(LEGACY) == "legacy"
    assert token_kind(pat) == "pat"
    assert token_kind("not-a-jwt") == "legacy"
    assert token_kind(LEGACY, "pat") == "pat" and token_kind(pat, "legacy") == "legacy"
    with pytest.raises(ValueError):
        token_kind(LEGACY, "bearer")


def test_legacy_token_is_sent_as_token_header_without_refresh():
    client, fake, _ = _client(LEGACY)
    assert client.get("/api/projects/") == {"ok": True}
    assert fake.sent == [("GET", "/api/projects/", f"Token {LEGACY}")]


def test_pat_is_exchanged_once_and_refreshed_before_expiry():
    pat = fake_jwt("refresh", time.time() + 3600)
    client, fake, _ = _client(pat, access_ttl_s=300)
    client.get("/api/projects/")
    client.get("/api/projects/")
    assert [p for _, p, _ in fake.sent] == [REFRESH_PATH, "/api/projects/", "/api/projects/"]
    assert fake.sent[0][2] is None  # the refresh itself carries no Authorization header
    assert fake.sent[1][2] == fake.sent[2][2] == f"Bearer {fake.issued[0]}"
    # 20 s before the access token expires (inside the 30 s margin): refreshed first.
    client.auth.clock = lambda: time.time() + 280
    client.get("/api/projects/")
    assert [p for _, p, _ in fake.sent[3:]] == [REFRESH_PATH, "/api/projects/"]
    assert fake.sent[-1][2] == f"Bearer {fake.issued[1]}" and client.auth.refreshes == 2


def test_pat_401_refreshes_once_and_resends_even_a_post():
    pat = fake_jwt("refresh", time.time() + 3600)
    client, fake, slept = _client(pat, script=[Resp(401, {"detail": "expired"})])
    assert client.request("POST", "/api/projects/1/import", retry=False, json=[{}]) == {"ok": True}
    paths = [p for _, p, _ in fake.sent]
    assert paths == [REFRESH_PATH, "/api/projects/1/import", REFRESH_PATH, "/api/projects/1/import"]
    assert fake.sent[1][2] != fake.sent[3][2] and slept == []


def test_pat_still_401_after_refresh_is_an_auth_error():
    pat = fake_jwt("refresh", time.time() + 3600)
    client, fake, _ = _client(pat, script=[Resp(401, {"detail": "no"}), Resp(401, {"detail": "no"})])
    with pytest.raises(AuthError, match="jwt/settings"):
        client.get("/api/projects/")
    assert [p for _, p, _ in fake.sent].count(REFRESH_PATH) == 2


def test_rejected_pat_is_a_clear_error_without_the_token(caplog):
    pat = fake_jwt("refresh", time.time() + 3600)
    client, _, _ = _client(pat, valid_refresh="something-else")
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError, match="rejected") as err:
        client.get("/api/projects/")
    assert pat not in str(err.value) and pat not in caplog.text


def test_legacy_token_disabled_says_so():
    body = {"detail": "Authentication token no longer valid: legacy token authentication has been "
                      "disabled for this organization"}
    client, _, _ = _client(LEGACY, script=[Resp(401, body)])
    with pytest.raises(AuthError, match="personal access token"):
        client.get("/api/projects/")


def test_408_is_retried_with_backoff():
    client, fake, slept = _client(LEGACY, script=[Resp(408), Resp(408)])
    assert client.get("/api/projects/") == {"ok": True}
    assert len(fake.sent) == 3 and len(slept) == 2
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0


def test_retry_after_seconds_and_http_date_honoured_on_429_and_503_capped():
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    script = [Resp(429, headers={"Retry-After": "3"}), Resp(503, headers={"Retry-After": date}),
              Resp(429, headers={"Retry-After": "120"})]
    client, fake, slept = _client(LEGACY, script=script)
    assert client.get("/api/tasks/") == {"ok": True}
    assert slept[0] == 3.0
    assert 3.0 <= slept[1] <= 5.0  # an HTTP date: the seconds until then (whole-second dates)
    assert slept[2] == 8.0  # capped at backoff_max_s
    # 502 with a Retry-After is plain backoff (the header is read on 429/503 only).
    client, _, slept = _client(LEGACY, script=[Resp(502, headers={"Retry-After": "7"})])
    client.get("/api/tasks/")
    assert slept[0] <= 1.0


def test_retry_after_parsing():
    now = time.time()
    assert retry_after_s("10") == 10.0 and retry_after_s(" 2.5 ") == 2.5
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s(email.utils.formatdate(now - 60, usegmt=True)) == 0.0
    assert 29 <= retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now=now) <= 30


def test_retries_run_out_as_unavailable_and_no_retry_means_one_try():
    import requests

    client, fake, slept = _client(LEGACY, script=[requests.ConnectionError("x")] * 4)
    with pytest.raises(Unavailable, match="4 times"):
        client.get("/api/projects/")
    client, fake, _ = _client(LEGACY, script=[Resp(429, headers={"Retry-After": "1"})])
    with pytest.raises(Unavailable):
        client.request("POST", "/api/projects/1/import", retry=False, json=[])
    assert len(fake.sent) == 1


def test_as_user_detects_its_own_token_kind_and_keeps_settings():
    admin, _, _ = _client(LEGACY)
    pat = fake_jwt("refresh", time.time() + 3600)
    user = admin.as_user(pat)
    assert user.auth.kind == "pat" and admin.auth.kind == "legacy"
    assert (user.max_retries, user.backoff_s, user.backoff_max_s) == (3, 1.0, 8.0)
    assert admin.as_user(LEGACY, token_kind="pat").auth.kind == "pat"


def test_tokens_never_in_reprs_or_logs(caplog):
    pat = fake_jwt("refresh", time.time() + 3600)
    client, fake, _ = _client(pat, script=[Resp(401), Resp(503), Resp(500)])
    with caplog.at_level(logging.DEBUG):
        client.get("/api/projects/")
    secrets_ = [pat, *fake.issued]
    for text in (repr(client), repr(client.auth), repr(client.conn), caplog.text):
        assert not any(s in text for s in secrets_)


# --- real Label Studio: a PAT created on the server -------------------------------------------


def _create_pat(ls_client: Client, ls_config) -> tuple[str, dict]:
    """A new user (signed up through the invite link) and a PAT they create for themselves
    (POST /api/token/, authenticated with their legacy token)."""
    from tests.annotation.helpers import annotator_store

    # Personal access tokens are on for the organisation (LS's default); legacy tokens stay on too.
    settings = ls_client.get("/api/jwt/settings")
    assert settings["legacy_api_tokens_enabled"] is True
    if not settings["api_tokens_enabled"]:
        ls_client.post("/api/jwt/settings", json={**settings, "api_tokens_enabled": True})
    user = annotator_store(ls_config).ensure(ls_client, f"pat-{secrets.token_hex(3)}@photogenic.local")
    created = ls_client.as_user(user["token"]).post("/api/token/")
    return created["token"], user


@pytest.mark.slow
def test_real_pat_lists_projects_and_survives_refresh(ls_client, ls_config, caplog):
    title = f"pat-visible-{secrets.token_hex(3)}"
    ls_client.post("/api/projects/", json={"title": title})
    pat, user = _create_pat(ls_client, ls_config)
    assert token_kind(pat) == "pat" and token_kind(user["token"]) == "legacy"

    client = ls_client.as_user(pat)
    with caplog.at_level(logging.DEBUG):
        assert client.whoami()["id"] == user["id"]
        assert title in {p["title"] for p in client.projects()}
        assert client.auth.refreshes == 1

        # Forced refresh: the cached access token forgotten, a new one fetched before the call.
        client.auth.expire()
        assert title in {p["title"] for p in client.projects()}
        assert client.auth.refreshes == 2

        # A rejected access token (well-formed, unexpired, wrong signature): 401 -> refresh -> resend.
        client.auth.set_access(fake_jwt("access", time.time() + 3600))
        refreshes = client.auth.refreshes
        assert client.whoami()["id"] == user["id"]
        assert client.auth.refreshes == refreshes + 1
    assert pat not in caplog.text and pat not in repr(client)

    # The same PAT, a second client: a valid access token from the server each time.
    assert ls_client.as_user(pat, token_kind="pat").whoami()["id"] == user["id"]
    # A made-up PAT is refused with a clear error.
    with pytest.raises(AuthError, match="rejected"):
        ls_client.as_user(fake_jwt("refresh", time.time() + 3600)).whoami()
