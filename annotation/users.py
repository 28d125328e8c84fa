"""Annotator accounts through Label Studio's own invite flow (open-source LS has no API that
adds a working member to the organisation): the admin's invite link, the signup form, then the
new user's own legacy API token. Passwords and tokens stay in a 0600 file, never printed."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import requests

from photogenic.annotation.lsclient import Client, LabelStudioError, Unavailable


def invite_url(client: Client) -> str:
    """The organisation's signup link for new annotators (share it with them)."""
    return client.url + client.get("/api/invite")["invite_url"]


def _form_post(session: requests.Session, url: str, data: dict) -> requests.Response:
    page = session.get(url, timeout=60)
    if page.status_code >= 400:
        raise LabelStudioError(f"GET {url.split('?')[0]}: HTTP {page.status_code}")
    data = {**data, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    return session.post(url, data=data, headers={"Referer": url}, allow_redirects=False, timeout=60)


def login_session(base_url: str, email: str, password: str) -> requests.Session | None:
    """A logged-in browser-like session, or None when the credentials are refused."""
    session = requests.Session()
    resp = _form_post(session, f"{base_url}/user/login/", {"email": email, "password": password})
    if resp.status_code == 302 and "sessionid" in session.cookies:
        return session
    return None


def signup_session(client: Client, email: str, password: str) -> requests.Session:
    session = requests.Session()
    resp = _form_post(session, invite_url(client), {
        "email": email, "password": password, "allow_newsletters": "false",
        "how_find_us": "", "elaborate": ""})
    if resp.status_code != 302 or "sessionid" not in session.cookies:
        raise LabelStudioError(f"signing up {email} through the invite link failed (HTTP {resp.status_code})")
    return session


def _user_token(client: Client, session: requests.Session) -> tuple[str, int]:
    token = session.get(f"{client.url}/api/current-user/token", timeout=60)
    who = session.get(f"{client.url}/api/current-user/whoami", timeout=60)
    if token.status_code != 200 or who.status_code != 200:
        raise LabelStudioError(f"could not read the annotator's token (HTTP {token.status_code}); "
                               "the server needs LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true")
    return token.json()["token"], who.json()["id"]


def _token_works(client: Client, token: str | None) -> bool:
    if not token:
        return False
    try:  # the client sends a legacy token or a PAT alike
        client.as_user(token).get("/api/current-user/whoami", retry=False)
    except Unavailable:
        raise
    except LabelStudioError:
        return False
    return True


class AnnotatorStore:
    """Annotator credentials per server, in a 0600 JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)

    def ensure(self, client: Client, email: str) -> dict:
        """{email, id, token} for an annotator, signing them up once through the invite link."""
        data = self._load()
        users = data.setdefault(client.url, {})
        entry = users.get(email)
        if entry and _token_works(client, entry.get("token")):
            return entry
        if entry:
            session = login_session(client.url, email, entry["password"])
            if session is not None:
                entry["token"], entry["id"] = _user_token(client, session)
                self._save(data)
                return entry
        password = secrets.token_urlsafe(16)
        session = signup_session(client, email, password)
        token, uid = _user_token(client, session)
        users[email] = {"email": email, "password": password, "token": token, "id": uid}
        self._save(data)
        return users[email]
