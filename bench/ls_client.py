"""Our Label Studio client vs label-studio-sdk 2.x, measured -> bench/results/ls_client.json.

Starts its own Label Studio (temporary data dir, free port on 127.0.0.1), imports N single-image
tasks (default 20,000) into one project, creates a personal access token (PAT) for the admin and
measures, side by side in one run:
  (a) listing every task (fields=task_only) with our client (`Client.tasks`, in the project's
      venv) and with the SDK's pager (`LabelStudio(...).tasks.list(...)` iterated fully, in
      Label Studio's venv `.venv-ls`, where the SDK stays if our venv drops it): each in a fresh
      process, alternating, `--rounds` times, wall time and peak RSS; the SDK both at our page
      size and at its default (the server's, 100);
  (b) import time of `label_studio_sdk` (and of building its client) vs `requests`, same
      interpreter, fresh processes;
  (c) the pinned packages that only label-studio-sdk needs: the dependency closure of
      photogenic's other requirements vs with the SDK, from installed package metadata, with
      their count and installed size;
  (d) whether an import POST whose reply is lost is sent again (duplicate tasks): a local stub
      server stores the batch, then answers 503 or drops the connection; the SDK's
      `projects.import_tasks` with its defaults vs our client as push calls it (retry=False).
Run from the repository root: `python -m bench.ls_client [--tasks 20000]`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from photogenic.annotation import server  # noqa: E402
from photogenic.annotation.lsclient import Client  # noqa: E402
from photogenic.pipeline.core.config.review import ReviewConfig  # noqa: E402
from photogenic.pipeline.core.runio import write_json_atomic  # noqa: E402
from tests.annotation.helpers import free_port  # noqa: E402

TOKEN_ENV = "PHOTOGENIC_BENCH_TOKEN"  # tokens reach the workers through the environment only
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Text name="caption" value="$caption"/>
  <Choices name="decision" toName="image" choice="single" showInline="true">
    <Choice value="keep"/><Choice value="drop"/>
  </Choices>
</View>"""

# One listing in a fresh process: argv = mode url project page_size; prints one JSON line.
LIST_WORKER = r"""
import json, os, resource, sys, time
mode, url, pid, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
token = os.environ["PHOTOGENIC_BENCH_TOKEN"]
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
t0 = time.perf_counter()
if mode == "ours":
    from photogenic.annotation.lsclient import Client
    from photogenic.annotation.server import Connection
    client = Client(Connection(url=url, token=token, local_files_root=None))
    t1 = time.perf_counter(); rss0 = rss_mb()
    tasks = client.tasks(pid, fields="task_only", page_size=int(page_size))
    ids = {t["id"] for t in tasks}
    keys = {t["data"]["key"] for t in tasks}
else:
    from label_studio_sdk import LabelStudio
    client = LabelStudio(base_url=url, api_key=token, timeout=600)
    t1 = time.perf_counter(); rss0 = rss_mb()
    kw = {} if page_size == "default" else {"page_size": int(page_size)}
    tasks = list(client.tasks.list(project=pid, fields="task_only", **kw))
    ids = {t.id for t in tasks}
    keys = {t.data["key"] for t in tasks}
t2 = time.perf_counter()
print(json.dumps({"setup_s": t1 - t0, "list_s": t2 - t1, "n": len(tasks), "unique_ids": len(ids),
                  "unique_keys": len(keys), "rss_before_list_mb": rss0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

IMPORT_TIME = r"""
import sys, time
t = time.perf_counter()
if sys.argv[1] == "requests":
    import requests
    t1 = time.perf_counter()
    requests.Session()
else:
    import label_studio_sdk
    t1 = time.perf_counter()
    label_studio_sdk.LabelStudio(base_url="http://127.0.0.1:9", api_key="0" * 40).tasks
print(t1 - t, time.perf_counter() - t)
"""

# A stub Label Studio whose first import stores the batch and then fails (503, or the connection
# dropped without a reply); prints {"posts": N, "stored": M, "error": ...}. argv = client failure.
RETRY_PROBE = r"""
import http.server, json, socket, sys, threading
client_kind, failure = sys.argv[1], sys.argv[2]
mode = failure.split("-")[0]
state = {"posts": 0, "stored": 0}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["posts"] += 1
        state["stored"] += len(body)
        if state["posts"] == 1 and mode == "503":
            self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers(); return
        if state["posts"] == 1 and mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR); return
        out = json.dumps({"task_count": len(body), "task_ids": list(range(len(body)))}).encode()
        self.send_response(201); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_address[1]}"
batch = [{"data": {"key": f"k{i}", "image": "/data/x.jpg", "caption": "c"}} for i in range(10)]
error = None
try:
    if client_kind == "sdk":
        from label_studio_sdk import LabelStudio
        opts = {"max_retries": 0} if failure.endswith("-noretry") else None
        LabelStudio(base_url=url, api_key="0" * 40).projects.import_tasks(
            id=1, request=batch, return_task_ids=True, request_options=opts)
    else:
        from photogenic.annotation.lsclient import Client
        from photogenic.annotation.server import Connection
        c = Client(Connection(url=url, token="0" * 40, local_files_root=None), max_retries=2, backoff_s=0.2)
        c.request("POST", "/api/projects/1/import", retry=client_kind == "ours-retry", json=batch)
except Exception as err:
    error = type(err).__name__
srv.shutdown()
print(json.dumps({**state, "batch": len(batch), "duplicates": state["stored"] - len(batch), "error": error}))
"""


def _ls_python(config: ReviewConfig) -> Path:
    return server.venv_dir(config) / "bin" / "python"


def _worker(python: Path, script: str, args: list[str], env: dict | None = None) -> dict | str:
    proc = subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, **(env or {})}, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    return json.loads(line) if line.startswith("{") else line


def import_tasks(client: Client, n: int, batch: int = 1000) -> int:
    project = client.post("/api/projects/", json={"title": "bench ls_client", "label_config": LABEL_CONFIG})
    pid = project["id"]
    for start in range(0, n, batch):
        tasks = [{"data": {"key": f"b{i:06d}", "image": f"/data/local-files/?d=img/{i % 8}.jpg",
                           "caption": f"photo {i}"}} for i in range(start, min(n, start + batch))]
        client.request("POST", f"/api/projects/{pid}/import", retry=False, json=tasks)
    assert client.project(pid)["task_number"] == n
    return pid


def measure_listing(conn, pid: int, n: int, config: ReviewConfig, token: str, page_size: int,
                    rounds: int) -> dict:
    env = {TOKEN_ENV: token}
    runs: dict[str, list[dict]] = {"ours": [], "sdk": [], "sdk_default_page": []}
    for r in range(rounds):
        order = [("ours", Path(sys.executable), str(page_size)), ("sdk", _ls_python(config), str(page_size))]
        if r % 2:
            order.reverse()
        if r == 0:
            order.append(("sdk_default_page", _ls_python(config), "default"))
        for name, python, ps in order:
            out = _worker(python, LIST_WORKER, ["ours" if name == "ours" else "sdk", conn.url, str(pid), ps], env)
            assert out["n"] == out["unique_ids"] == out["unique_keys"] == n, (name, out)
            print(f"  {name:17s} list {out['list_s']:7.2f} s  peak RSS {out['peak_rss_mb']:6.1f} MB",
                  file=sys.stderr)
            runs[name].append(out)

    def summary(items: list[dict]) -> dict:
        return {"list_seconds_median": round(statistics.median(i["list_s"] for i in items), 2),
                "list_seconds_all": [round(i["list_s"], 2) for i in items],
                "client_setup_seconds": round(statistics.median(i["setup_s"] for i in items), 3),
                "rss_before_list_mb": round(statistics.median(i["rss_before_list_mb"] for i in items), 1),
                "peak_rss_mb": round(max(i["peak_rss_mb"] for i in items), 1),
                "rss_growth_while_listing_mb": round(max(i["peak_rss_mb"] - i["rss_before_list_mb"]
                                                         for i in items), 1),
                "tasks_listed": items[0]["n"]}

    return {name: summary(items) for name, items in runs.items() if items}


def measure_import_time(config: ReviewConfig, repeats: int = 5) -> dict:
    out = {}
    for what in ("requests", "label_studio_sdk"):
        vals = [tuple(map(float, _worker(_ls_python(config), IMPORT_TIME, [what]).split()))
                for _ in range(repeats)]
        out[what] = {"import_seconds_median": round(statistics.median(v[0] for v in vals), 3),
                     "import_and_client_seconds_median": round(statistics.median(v[1] for v in vals), 3)}
    return out


def measure_retry(config: ReviewConfig) -> dict:
    out = {}
    for failure in ("503", "drop"):
        out[f"sdk_import_tasks_{failure}"] = _worker(_ls_python(config), RETRY_PROBE, ["sdk", failure])
        out[f"ours_push_retry_false_{failure}"] = _worker(Path(sys.executable), RETRY_PROBE, ["ours", failure])
        out[f"ours_retry_true_{failure}"] = _worker(Path(sys.executable), RETRY_PROBE, ["ours-retry", failure])
        out[f"sdk_import_tasks_max_retries_0_{failure}"] = _worker(_ls_python(config), RETRY_PROBE,
                                                                   ["sdk", f"{failure}-noretry"])
    return out


# --- (c) packages only the SDK needs, from installed metadata ----------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sdk_only_packages(lock: Path, ls_site: Path, sdk: str = "label-studio-sdk") -> dict:
    """Walk Requires-Dist of installed distributions (markers evaluated, extras followed) from
    photogenic's requirements (every extra whose packages the lock pins) with and without the SDK.
    Distributions missing from this venv (the SDK once dropped from it) are read from Label
    Studio's venv (`ls_site`): then the result is what adding the SDK back would pin."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    def lookup(name: str):
        try:
            return md.distribution(name)
        except md.PackageNotFoundError:
            found = list(md.distributions(name=name, path=[str(ls_site)]))
            if not found:
                raise
            return found[0]

    pinned = {}
    for line in lock.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pinned[_norm(name.split("[")[0])] = version.strip()

    def requires(name: str, extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
        try:
            dist = lookup(name)
        except md.PackageNotFoundError:
            return []
        out = []
        for raw in dist.requires or []:
            req = Requirement(raw)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(e) for e in envs):
                out.append((_norm(req.name), frozenset(req.extras)))
        return out

    def closure(roots: list[tuple[str, frozenset[str]]]) -> set[str]:
        seen: dict[str, frozenset[str]] = {}
        stack = list(roots)
        while stack:
            name, extras = stack.pop()
            if name in seen and extras <= seen[name]:
                continue
            seen[name] = seen.get(name, frozenset()) | extras
            stack.extend(requires(name, seen[name]))
        return set(seen)

    dist = md.distribution("photogenic")
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    roots = []
    for raw in dist.requires or []:
        req = Requirement(raw)
        marker_extras = set(re.findall(r'extra == "([^"]+)"', str(req.marker))) if req.marker else set()
        if marker_extras and not (marker_extras & extras and _norm(req.name) in pinned):
            continue  # an extra the lock does not install (e.g. paddleocr, gcsfs)
        roots.append((_norm(req.name), frozenset(req.extras)))
    others = [r for r in roots if r[0] != sdk]
    without = closure(others)
    with_sdk = closure(others + [(sdk, frozenset())])
    sdk_pinned = sdk in pinned
    only = sorted((with_sdk - without) & set(pinned)) if sdk_pinned else sorted(with_sdk - without)

    def size_mb(name: str) -> float:
        try:
            files = lookup(name).files or []
        except md.PackageNotFoundError:
            return 0.0
        total = 0
        for f in files:
            p = f.locate()
            try:
                total += p.stat().st_size if p.is_file() else 0
            except OSError:
                pass
        return total / 1e6

    sizes = {n: round(size_mb(n), 2) for n in only}
    unexplained = sorted(set(pinned) - with_sdk - {"photogenic"})
    def version(name: str) -> str:
        return pinned.get(name) or lookup(name).version

    return {"sdk_in_lock": sdk_pinned,
            "sdk_metadata_from": "project venv" if sdk_pinned and _installed(sdk) else str(ls_site),
            "only_sdk_needs": [f"{n}=={version(n)}" for n in only], "count": len(only),
            "installed_mb": round(sum(sizes.values()), 1), "installed_mb_each": sizes,
            "lock_pins": len(pinned), "pins_needed_without_sdk": len(without & set(pinned)),
            "pins_in_no_closure": unexplained}


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.distribution(name)
        return True
    except md.PackageNotFoundError:
        return False


def _site_packages(python: Path) -> Path:
    return Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--page-size", type=int, default=5000, help="our client's default page size")
    ap.add_argument("--rounds", type=int, default=2, help="listings per client (alternating)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ls_client.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="photogenic-bench-lsclient-"))
    config = ReviewConfig(port=free_port(), data_dir=str(work / "ls"))
    try:
        print("(c) dependency closure ...", file=sys.stderr)
        deps = sdk_only_packages(REPO / "requirements.lock", _site_packages(_ls_python(config)))
        print("(b) import times ...", file=sys.stderr)
        imports = measure_import_time(config)
        print("(d) retry of a POST that landed ...", file=sys.stderr)
        retry = measure_retry(config)

        t = time.perf_counter()
        conn = server.start(config, echo=lambda m: print(m, file=sys.stderr))
        start_s = time.perf_counter() - t
        admin = Client(conn)
        t = time.perf_counter()
        pid = import_tasks(admin, args.tasks)
        import_s = time.perf_counter() - t
        print(f"imported {args.tasks} tasks in {import_s:.1f}s", file=sys.stderr)
        pat = admin.post("/api/token/")["token"]  # both clients authenticate with this PAT
        print("(a) listing all tasks ...", file=sys.stderr)
        listing = measure_listing(conn, pid, args.tasks, config, pat, args.page_size, args.rounds)
    finally:
        server.stop(config)
        shutil.rmtree(work, ignore_errors=True)

    ours, sdk, sdk_def = listing["ours"], listing["sdk"], listing.get("sdk_default_page")
    ratios = {
        "sdk_vs_ours_list_time": round(sdk["list_seconds_median"] / ours["list_seconds_median"], 2),
        "sdk_vs_ours_peak_rss": round(sdk["peak_rss_mb"] / ours["peak_rss_mb"], 2),
        "sdk_vs_ours_rss_growth_while_listing": round(sdk["rss_growth_while_listing_mb"]
                                                      / ours["rss_growth_while_listing_mb"], 2),
        # `import label_studio_sdk` is lazy: building the client is where its modules load.
        "sdk_vs_requests_import_and_client_time": round(
            imports["label_studio_sdk"]["import_and_client_seconds_median"]
            / imports["requests"]["import_and_client_seconds_median"], 1),
    }
    if sdk_def:
        ratios["sdk_default_page_vs_ours_list_time"] = round(
            sdk_def["list_seconds_median"] / ours["list_seconds_median"], 2)
    out = {
        "tasks": args.tasks,
        "page_size": args.page_size,
        "rounds": args.rounds,
        "auth": "a personal access token (JWT refresh token) of the admin, for both clients",
        "listing": listing,
        "ratios": ratios,
        "import_time": imports,
        "sdk_only_dependencies": deps,
        "post_retry_probe": retry,
        "post_retry_reading": (
            "label_studio_sdk/core/http_client.py HttpClient.request retries any method, POST "
            "included, on httpx.ConnectError/RemoteProtocolError and on status >= 500, 408, 409, "
            "429 (max_retries 2 by default; Retry-After honoured up to 60 s); a RemoteProtocolError "
            "or a 5xx can come after the server stored the batch, so projects.import_tasks with its "
            "defaults imports it twice (probe above). request_options={'max_retries': 0} turns that "
            "off per call. Our push sends imports with retry=False and re-checks the project's keys "
            "before resending; our client's default retry=True would resend too."),
        "import_seconds_20k_batches_of_1000": round(import_s, 1),
        "server_first_start_seconds": round(start_s, 1),
        "label_studio": config.label_studio_version,
        "label_studio_sdk": _worker(_ls_python(config), "import importlib.metadata as m; "
                                    "print(m.version('label-studio-sdk'))", []),
        "database": "sqlite (label-studio default)",
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(out, args.out)
    print(json.dumps({"listing_seconds": {k: v["list_seconds_median"] for k, v in listing.items()},
                      "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in listing.items()},
                      "rss_growth_while_listing_mb": {k: v["rss_growth_while_listing_mb"]
                                                      for k, v in listing.items()},
                      "ratios": ratios,
                      "sdk_only_packages": deps["count"], "sdk_only_installed_mb": deps["installed_mb"],
                      "duplicates": {k: v["duplicates"] for k, v in retry.items()}}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
