"""Security drill: the local-files serving of the Label Studio the project starts stays inside its
document root (loopback binding and token hygiene are in test_review_server.py)."""
import requests

pytest_plugins = ["tests.review_helpers"]


def test_local_files_refuse_paths_outside_the_document_root(ls_server):
    root = ls_server.local_files_root
    root.mkdir(parents=True, exist_ok=True)
    (root / "inside.txt").write_text("ok")
    secret = root.parent / "outside-secret.txt"
    secret.write_text("must not be served")
    headers = {"Authorization": f"Token {ls_server.token}"}
    base = f"{ls_server.url}/data/local-files/"
    assert requests.get(base, params={"d": "inside.txt"}, headers=headers, timeout=10).text == "ok"
    for attempt in ("../outside-secret.txt", "../../outside-secret.txt", str(secret), "/etc/passwd",
                    "%2e%2e/outside-secret.txt", "inside.txt/../../outside-secret.txt"):
        resp = requests.get(base, params={"d": attempt}, headers=headers, timeout=10)
        assert resp.status_code in (400, 403, 404), (attempt, resp.status_code)
        assert "must not be served" not in resp.text and "root:" not in resp.text
