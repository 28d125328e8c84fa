"""A Spark standalone cluster across network namespaces (tests/netns.py): driver, master and moto S3
in the hub, two workers with their own address and private /tmp. Jobs are spark-submitted from the
hub and write to S3; one worker is SIGKILLed mid-job and the job still completes on the other."""
import json
import subprocess
import time

import pytest

from tests.conftest import CHEAP_CONFIG, REPO
from tests.netns import MultihostCluster, ns_pids, require_netns

pytestmark = pytest.mark.timeout(900)

# The spark-submitted program (later: `pipeline/cli.py filter --pool s3://... --out s3://...`).
JOB = r'''
import json, os, socket, sys, time, uuid
from photogenic.pipeline.core.spark import get_spark

bucket, prefix, n_tasks, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
marker = f"/tmp/driver-marker-{uuid.uuid4().hex}"
open(marker, "w").close()  # in the driver's /tmp: no executor may see it


def task(n):
    import s3fs
    from pyspark import TaskContext

    ctx = TaskContext.get()
    info = {"n": n, "attempt": ctx.attemptNumber(), "ip": os.environ.get("SPARK_LOCAL_IP"),
            "host": socket.gethostname(), "netns": os.readlink("/proc/self/ns/net"), "pid": os.getpid(),
            "sees_driver_marker": os.path.exists(marker)}
    fs = s3fs.S3FileSystem()
    fs.pipe(f"{bucket}/{prefix}/started/{n}-{info['attempt']}-{info['ip']}", json.dumps(info).encode())
    time.sleep(sleep_s)
    fs.pipe(f"{bucket}/{prefix}/out/{n}.json", json.dumps(info).encode())
    return info


spark = get_spark()
try:
    sc = spark.sparkContext
    results = sc.parallelize(range(n_tasks), n_tasks).map(task).collect()
    print("RESULT " + json.dumps({"driver_host": sc.getConf().get("spark.driver.host"),
                                  "driver_netns": os.readlink("/proc/self/ns/net"), "tasks": results}))
finally:
    spark.stop()
    os.remove(marker)
'''


@pytest.fixture(scope="module")
def multihost_cluster(tmp_path_factory):
    require_netns()
    with MultihostCluster(tmp_path_factory.mktemp("multihost-logs"), n_workers=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def job_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("multihost-job") / "job.py"
    path.write_text(JOB)
    return path


def communicate_ok(cluster: MultihostCluster, proc: subprocess.Popen, timeout: float,
                   what: str = "command") -> tuple[str, str]:
    """The process's output once it ended (killed past `timeout`); it must have succeeded."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, (f"{what} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}\n"
                                  f"{cluster.log_tails()}")
    return out, err


def finish(cluster: MultihostCluster, proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = communicate_ok(cluster, proc, timeout, "spark-submit")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-3000:] + err[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


# Run in the hub: upload a local pool to the cluster's S3 server (as a user's upload would).
UPLOAD = r'''
import sys, s3fs
fs = s3fs.S3FileSystem()
local, target = sys.argv[1:3]
fs.put(local.rstrip("/") + "/", target, recursive=True)
'''
# Run in the hub: what every reader of the run sees (the parts the markers commit).
COMMITTED = r'''
import json, sys
from photogenic.pipeline.core.runio import committed_parquet, read_json, read_parquet
scores = sys.argv[1] + "/scores"
from photogenic.pipeline.core.storage import as_path
markers = [read_json(p) for p in sorted(as_path(scores + "/_stats").glob("*.json"))]
keys = [k for f in committed_parquet(scores) for k in read_parquet(f, columns=["key"]).column("key").to_pylist()]
print(json.dumps({"keys": keys, "markers": markers}), flush=True)
# Skip interpreter teardown: Arrow's threads over an fsspec filesystem can abort there
# ("terminate called without an active exception", apache/arrow#34314) after all the work is done.
import os; os._exit(0)
'''


@pytest.fixture(scope="module")
def cluster_pool(multihost_cluster, sample_pool, tmp_path_factory) -> dict:
    cluster = multihost_cluster
    proc = cluster.net.python(cluster.net.hub, UPLOAD, str(sample_pool), f"{cluster.BUCKET}/pool", env=cluster.aws_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = tmp_path_factory.mktemp("multihost-cfg") / "cheap.toml"
    config.write_text(CHEAP_CONFIG)
    return {"pool": f"s3://{cluster.BUCKET}/pool", "config": config}


def photogenic_filter(cluster: MultihostCluster, pool: dict, run: str, conf: dict | None = None) -> subprocess.Popen:
    return cluster.submit([REPO / "pipeline" / "cli.py", "filter", "--pool", pool["pool"], "--out", run,
                           "--config", pool["config"], "--quiet"], conf=conf)


def committed(cluster: MultihostCluster, run: str) -> dict:
    proc = cluster.net.python(cluster.net.hub, COMMITTED, run, env=cluster.aws_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def assert_filter_ok(cluster: MultihostCluster, proc: subprocess.Popen, timeout: float = 400) -> None:
    out, _ = communicate_ok(cluster, proc, timeout, "photogenic filter")
    assert "passed" in out


def test_network_is_private(multihost_cluster):
    net = multihost_cluster.net
    for ns in net.namespaces:
        routes = subprocess.run(["ip", "-n", ns, "route", "show"], capture_output=True, text=True).stdout
        assert "default" not in routes and routes.strip().startswith(f"{net.prefix}.0/24"), routes
    # Nothing of ours in the root namespace.
    assert net.tag not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_tasks_run_on_both_workers_and_write_s3(multihost_cluster, job_script):
    cluster = multihost_cluster
    result = finish(cluster, cluster.submit([job_script, cluster.BUCKET, "basic", 4, 1]))
    tasks = result["tasks"]
    assert result["driver_host"] == cluster.hub_addr  # get_spark kept spark-submit's driver address
    assert sorted(t["n"] for t in tasks) == [0, 1, 2, 3]
    assert {t["ip"] for t in tasks} == set(cluster.worker_addrs)
    assert len({t["netns"] for t in tasks}) == 2 and result["driver_netns"] not in {t["netns"] for t in tasks}
    assert not any(t["sees_driver_marker"] for t in tasks)  # each worker has its own /tmp
    objects = cluster.s3_read("basic/out")
    assert sorted(objects) == [f"basic/out/{n}.json" for n in range(4)]
    assert {json.loads(v)["ip"] for v in objects.values()} == set(cluster.worker_addrs)


def test_photogenic_filter_through_spark_submit_one_row_per_key(multihost_cluster, cluster_pool):
    """The filter job with the pool and the run on S3, its shards scored on both workers."""
    cluster = multihost_cluster
    run = f"s3://{cluster.BUCKET}/runs/filter"
    assert_filter_ok(cluster, photogenic_filter(cluster, cluster_pool, run))
    state = committed(cluster, run)
    assert len(state["keys"]) == len(set(state["keys"])) == 282
    assert len(state["markers"]) == 8
    assert {m["executor"] for m in state["markers"]} == set(cluster.worker_addrs)  # both hosts scored


def test_photogenic_filter_survives_a_worker_killed_mid_job(multihost_cluster, cluster_pool):
    """Every process of one worker's namespace is SIGKILLed while shards are in flight: Spark
    reschedules them on the other worker and the run ends with exactly one row per key. Worker 0
    is started again afterwards for the tests that follow."""
    cluster = multihost_cluster
    victim, survivor = cluster.worker_addrs
    run = f"s3://{cluster.BUCKET}/runs/kill-filter"
    scores = run.removeprefix(f"s3://{cluster.BUCKET}/") + "/scores"
    # Hold each shard 3 s between its part and its marker, so the kill lands mid-shard.
    proc = photogenic_filter(cluster, cluster_pool, run,
                             conf={"spark.executorEnv.PHOTOGENIC_SLOWPOINT": "filter.before_commit:3"})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any("/part-" in k for k in cluster.s3_read(scores)):
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"no part written:\n{proc.communicate()[1][-3000:]}\n{cluster.log_tails()}")
    assert cluster.kill_worker(0) and not ns_pids(cluster.net.workers[0])
    try:
        assert_filter_ok(cluster, proc, timeout=500)
        state = committed(cluster, run)
        assert len(state["keys"]) == len(set(state["keys"])) == 282
        assert sorted(m["shard"] for m in state["markers"]) == sorted({m["shard"] for m in state["markers"]})
        assert len(state["markers"]) == 8
        assert survivor in {m["executor"] for m in state["markers"]}
    finally:
        cluster.start_worker(0)
        cluster.wait_ready(2)


def test_job_survives_a_worker_killed_mid_job(multihost_cluster, job_script):
    """Runs last in the module: worker 0 stays dead."""
    cluster = multihost_cluster
    victim, survivor = cluster.worker_addrs
    n_tasks = 8
    proc = cluster.submit([job_script, cluster.BUCKET, "kill", n_tasks, 4])
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        started = cluster.s3_read("kill/started")
        if any(key.endswith(f"-{victim}") for key in started):
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"no task started on {victim}:\n{proc.communicate()[1][-3000:]}\n{cluster.log_tails()}")
    killed = cluster.kill_worker(0)
    assert killed and not ns_pids(cluster.net.workers[0])

    result = finish(cluster, proc)
    assert sorted(t["n"] for t in result["tasks"]) == list(range(n_tasks))  # each N once
    out = {key: json.loads(v) for key, v in cluster.s3_read("kill/out").items()}
    assert sorted(out) == sorted(f"kill/out/{n}.json" for n in range(n_tasks))
    started = [json.loads(v) for v in cluster.s3_read("kill/started").values()]
    cut_short = {s["n"] for s in started if s["ip"] == victim} - {o["n"] for o in out.values() if o["ip"] == victim}
    assert cut_short, "no task was running on the killed worker"
    for n in cut_short:  # rescheduled on the surviving worker
        assert out[f"kill/out/{n}.json"]["ip"] == survivor and out[f"kill/out/{n}.json"]["attempt"] >= 1
