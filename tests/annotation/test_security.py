"""Security drill: the local-files serving of the Label Studio the project starts stays inside its
document root (loopback binding and token hygiene are in test_review_server.py)."""
import requests

from photogenic.annotation.media import media_name
from tests.conftest import run_cli
from tests.annotation.helpers import make_fake_run, write_config

pytest_plugins = ["tests.annotation.helpers"]


def test_local_files_refuse_paths_outside_the_document_root(tmp_path, ls_server, ls_config):
    run = tmp_path / "run"
    keys = make_fake_run(run, 3, prefix="sec")
    run_cli("review", "push", "--run", run, "--pass", "1", "--config", write_config(tmp_path / "c.toml", ls_config))
    run_id = (run / "review" / "run_id").read_text().strip()
    served = f"{run_id}/{media_name(keys[0])}"
    secret = ls_server.local_files_root.parent / "outside-secret.txt"
    secret.write_text("must not be served")
    headers = {"Authorization": f"Token {ls_server.token}"}
    base = f"{ls_server.url}/data/local-files/"
    ok = requests.get(base, params={"d": served}, headers=headers, timeout=10)
    assert ok.status_code == 200 and ok.content[:2] == b"\xff\xd8"  # the pushed image, a JPEG
    for attempt in (f"{run_id}/../../outside-secret.txt", "../outside-secret.txt", str(secret), "/etc/passwd",
                    f"{run_id}/%2e%2e/%2e%2e/outside-secret.txt", f"{served}/../../../outside-secret.txt"):
        resp = requests.get(base, params={"d": attempt}, headers=headers, timeout=10)
        # Label Studio answers some traversals with a 500 (its path check raises): refused all the same.
        assert resp.status_code >= 400, (attempt, resp.status_code)
        assert b"must not be served" not in resp.content and b"root:" not in resp.content
