"""A private multi-host network on one machine, from Linux network namespaces, and a Spark
standalone cluster with an S3 server (moto) on it.

`Network(n)`: a hub namespace holding a bridge (10.213.X.1/24, X from the pid) and n worker
namespaces, each joined to the bridge by a veth pair (10.213.X.11, .12, ...). Every namespace has
its own `lo`; none has a default route and nothing is added to the root namespace, so traffic only
goes between these namespaces. On exit every process left in them is SIGKILLed and the namespaces
(with their links) are deleted. Needs root and iproute2 (`ip`); skips only when either is missing.

`MultihostCluster`: moto S3 and a Spark master in the hub (where the driver runs too, via
`submit`), one Spark worker per worker namespace with a private tmpfs /tmp (its own mount
namespace), so no file is shared between "hosts" through /tmp.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_COUNTER = itertools.count()



def _code_under_tmp() -> list[str]:
    """The checkout and the venv when they live under /tmp (a CI clone): a worker's fresh /tmp
    would hide them, so they are mounted back into it."""
    under = sorted({p for p in (REPO, Path(sys.prefix).resolve()) if p.parts[:2] == ("/", "tmp")}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in under:
        if not any(p.is_relative_to(k) for k in kept):  # the venv inside the checkout comes along
            kept.append(p)
    return [str(p) for p in kept]


def _private_tmp_script() -> str:
    # Hold each code path on a scratch tmpfs over /mnt (this mount namespace only), put a fresh
    # tmpfs on /tmp, then bind the held paths back at their places.
    keep = _code_under_tmp()
    hold = [f"mkdir -p /mnt/k{i} && mount --bind '{p}' /mnt/k{i}" for i, p in enumerate(keep)]
    back = [f"mkdir -p '{p}' && mount --bind /mnt/k{i} '{p}'" for i, p in enumerate(keep)]
    steps = (["mount -t tmpfs -o size=1m tmpfs /mnt"] if keep else []) + hold + [
        "mount -t tmpfs -o size=2g tmpfs /tmp"] + back + ['exec "$@"']
    return " && ".join(steps)


# Worker processes get their own mount namespace with a fresh tmpfs on /tmp.
PRIVATE_TMP = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _private_tmp_script(), "sh"]


def require_netns() -> None:
    """Skip (only) when network namespaces cannot be made here: not root, or no `ip`."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ns_pids(ns: str) -> list[int]:
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]


def kill_namespace(ns: str, timeout: float = 20) -> list[int]:
    """SIGKILL every process in namespace `ns` (again, until none is left); the pids killed."""
    killed: list[int] = []
    deadline = time.time() + timeout
    while pids := ns_pids(ns):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if time.time() > deadline:
            raise RuntimeError(f"processes {pids} in namespace {ns} survive SIGKILL")
        time.sleep(0.1)
    return sorted(set(killed))


def run_in(ns: str, cmd: list[str], env: dict[str, str] | None = None, *, private_tmp: bool = False,
           **popen_kw) -> subprocess.Popen:
    """Start `cmd` in namespace `ns` (os.environ updated with `env`); private_tmp: own tmpfs /tmp."""
    full = ["ip", "netns", "exec", ns, *(PRIVATE_TMP if private_tmp else []), *map(str, cmd)]
    return subprocess.Popen(full, env={**os.environ, **(env or {})}, **popen_kw)


def remove_stale() -> list[str]:
    """Delete namespaces a killed run left (named pg<pid>n<k>-... for a pid no longer alive)."""
    removed = []
    for ns in sh("ip", "netns", "list", check=False).split():
        m = re.fullmatch(r"pg(\d+)n\d+-(hub|w\d+)", ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            kill_namespace(ns)
            sh("ip", "netns", "del", ns, check=False)
            removed.append(ns)
    return removed


class Network:
    """Hub namespace with a bridge, plus n worker namespaces on it; see the module docstring."""

    def __init__(self, n_workers: int = 2):
        n = next(_COUNTER)
        pid = os.getpid()
        self.tag = f"pg{pid}n{n}"
        self.prefix = f"10.213.{(pid + 97 * n) % 254 + 1}"
        self.hub = f"{self.tag}-hub"
        self.hub_addr = f"{self.prefix}.1"
        self.workers = [f"{self.tag}-w{i}" for i in range(n_workers)]
        self.worker_addrs = [f"{self.prefix}.{11 + i}" for i in range(n_workers)]
        self.procs: list[subprocess.Popen] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.hub, *self.workers]

    def __enter__(self) -> Network:
        require_netns()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        remove_stale()
        existing = set(sh("ip", "netns", "list").split())
        for ns in self.namespaces:
            if ns in existing:  # left by a killed run whose pid came round again
                kill_namespace(ns)
                sh("ip", "netns", "del", ns)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        bridge = f"{self.tag}b"[-15:]
        sh("ip", "-n", self.hub, "link", "add", bridge, "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", f"{self.hub_addr}/24", "dev", bridge)
        sh("ip", "-n", self.hub, "link", "set", bridge, "up")
        for i, (ns, addr) in enumerate(zip(self.workers, self.worker_addrs)):
            # Both ends are made inside namespaces: the hub end stays in the hub, the peer goes to ns.
            hub_end = f"{self.tag}v{i}"[-15:]
            sh("ip", "-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", hub_end, "master", bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        for ns in self.namespaces:
            routes = sh("ip", "-n", ns, "route", "show", "default")
            assert not routes.strip(), f"{ns} has a default route: {routes}"

    def run_in(self, ns: str, cmd: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        proc = run_in(ns, cmd, env, **kw)
        self.procs.append(proc)
        return proc

    def python(self, ns: str, code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a short Python snippet in `ns` (the root namespace cannot reach these addresses)."""
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]
        return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def kill_namespace(self, ns: str) -> list[int]:
        killed = kill_namespace(ns)
        self._reap()
        return killed

    def _reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.wait(1)
                except subprocess.TimeoutExpired:
                    pass

    def close(self) -> None:
        errors = []
        existing = set(sh("ip", "netns", "list", check=False).split())
        for ns in self.namespaces:
            if ns not in existing:
                continue
            try:
                kill_namespace(ns)
            except RuntimeError as exc:
                errors.append(str(exc))
            sh("ip", "netns", "del", ns, check=False)
        for proc in self.procs:  # all dead now: collect them
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Nothing is made in the root namespace; should a link with our tag be there anyway, it goes.
        for line in sh("ip", "-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(self.tag):
                sh("ip", "link", "del", name, check=False)
        left = set(sh("ip", "netns", "list", check=False).split()) & set(self.namespaces)
        if errors or left:
            raise RuntimeError(f"netns clean-up incomplete: {errors} {sorted(left)}")


# --- Spark standalone + moto S3 on a Network -----------------------------------------------------

MOTO_SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
ThreadedMotoServer(ip_address=sys.argv[1], port=int(sys.argv[2])).start()
while True:
    time.sleep(3600)
"""

# Probe run in the hub: moto answers and the bucket exists; how many Spark workers are ALIVE.
PROBE = """
import json, sys, urllib.request
endpoint, master_ui, bucket = sys.argv[1:4]
out = {"s3": False, "alive": []}
try:
    import s3fs
    fs = s3fs.S3FileSystem()
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    out["s3"] = fs.exists(bucket)
except Exception as exc:
    out["s3_error"] = repr(exc)
try:
    with urllib.request.urlopen(master_ui + "/json/", timeout=3) as resp:
        state = json.load(resp)
    out["alive"] = [w["host"] for w in state.get("workers", []) if w["state"] == "ALIVE"]
except Exception as exc:
    out["master_error"] = repr(exc)
print(json.dumps(out))
"""

S3_READ = """
import json, sys
import s3fs
fs = s3fs.S3FileSystem()
bucket, prefix = sys.argv[1:3]
keys = fs.find(f"{bucket}/{prefix}")
print(json.dumps({k[len(bucket) + 1:]: fs.cat(k).decode(errors="replace") for k in keys}))
"""


class MultihostCluster:
    """moto S3 + Spark master in the hub, one Spark worker per worker namespace (private /tmp)."""

    MASTER_PORT, MASTER_UI, S3_PORT = 7077, 8080, 5000
    BUCKET = "photogenic"

    def __init__(self, logs: Path, n_workers: int = 2):
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.logs = Path(logs)
        self.net = Network(n_workers)
        self.hub_addr = self.net.hub_addr
        self.worker_addrs = self.net.worker_addrs
        self.master_url = f"spark://{self.hub_addr}:{self.MASTER_PORT}"
        self.master_ui = f"http://{self.hub_addr}:{self.MASTER_UI}"
        self.s3_endpoint = f"http://{self.hub_addr}:{self.S3_PORT}"
        self.aws_env = {"AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.workers: list[subprocess.Popen] = []

    def spark_env(self, local_ip: str) -> dict[str, str]:
        return {"SPARK_HOME": str(self.spark_home), "SPARK_NO_DAEMONIZE": "1", "SPARK_LOCAL_IP": local_ip,
                "SPARK_LOG_DIR": str(self.logs), "JAVA_HOME": os.environ.get("JAVA_HOME", ""),
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, **self.aws_env}

    def _log(self, name: str):
        return open(self.logs / f"{name}.log", "ab")

    def __enter__(self) -> MultihostCluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.net.__enter__()
        try:
            self._start()
        except BaseException:
            self.net.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.net.close()

    def _start(self) -> None:
        spark_class = str(self.spark_home / "bin" / "spark-class")
        hub_env = self.spark_env(self.hub_addr)
        self.net.run_in(self.net.hub, [sys.executable, "-c", MOTO_SERVER, self.hub_addr, str(self.S3_PORT)],
                        hub_env, stdout=self._log("moto"), stderr=subprocess.STDOUT)
        self.net.run_in(self.net.hub, [spark_class, "org.apache.spark.deploy.master.Master", "--host", self.hub_addr,
                                       "--port", self.MASTER_PORT, "--webui-port", self.MASTER_UI],
                        hub_env, stdout=self._log("master"), stderr=subprocess.STDOUT)
        for i in range(len(self.net.workers)):
            self.start_worker(i)
        self.wait_ready(len(self.net.workers))

    def start_worker(self, i: int) -> subprocess.Popen:
        cmd = [str(self.spark_home / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker", self.master_url,
               "--host", self.worker_addrs[i], "--cores", "1", "--memory", "1g", "--work-dir", "/tmp/work"]
        proc = self.net.run_in(self.net.workers[i], cmd, self.spark_env(self.worker_addrs[i]), private_tmp=True,
                               stdout=self._log(f"worker{i}"), stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def probe(self) -> dict:
        proc = self.net.python(self.net.hub, PROBE, self.s3_endpoint, self.master_ui, self.BUCKET, env=self.aws_env)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        return json.loads(proc.stdout)

    def wait_ready(self, n_workers: int, timeout: float = 120) -> None:
        deadline, state = time.time() + timeout, {}
        while time.time() < deadline:
            state = self.probe()
            if state.get("s3") and len(state.get("alive", [])) >= n_workers:
                return
            time.sleep(1)
        raise TimeoutError(f"cluster not ready in {timeout}s: {state}\n{self.log_tails()}")

    def submit(self, args: list[str], env: dict[str, str] | None = None, conf: dict[str, str] | None = None,
               **popen_kw) -> subprocess.Popen:
        """spark-submit (client mode, driver in the hub at hub_addr) to the cluster's master."""
        conf = {"spark.driver.host": self.hub_addr, "spark.driver.bindAddress": self.hub_addr,
                "spark.executor.memory": "1g",
                # Start the job only once every worker has its executor.
                "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                "spark.scheduler.maxRegisteredResourcesWaitingTime": "90s",
                "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
                **{f"spark.executorEnv.{k}": v for k, v in self.aws_env.items()}, **(conf or {})}
        cmd = [str(self.spark_home / "bin" / "spark-submit"), "--master", self.master_url,
               *itertools.chain.from_iterable(("--conf", f"{k}={v}") for k, v in conf.items()), *map(str, args)]
        popen_kw.setdefault("stdout", subprocess.PIPE)
        popen_kw.setdefault("stderr", subprocess.PIPE)
        popen_kw.setdefault("text", True)
        popen_kw.setdefault("cwd", REPO)
        return self.net.run_in(self.net.hub, cmd, {**self.spark_env(self.hub_addr), **(env or {})}, **popen_kw)

    def kill_worker(self, i: int) -> list[int]:
        """SIGKILL every process of worker namespace i (worker, executors, Python workers)."""
        return self.net.kill_namespace(self.net.workers[i])

    def s3_read(self, prefix: str) -> dict[str, str]:
        """{key: text} of every object under prefix in the bucket (read from the hub)."""
        proc = self.net.python(self.net.hub, S3_READ, self.BUCKET, prefix, env=self.aws_env)
        if proc.returncode != 0:
            raise RuntimeError(f"s3 read failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout)

    def log_tails(self, chars: int = 3000) -> str:
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)
