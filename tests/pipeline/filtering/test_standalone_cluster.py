"""The filter job under spark-submit on a standalone Spark cluster (a master and two workers on
127.0.0.1, started from pyspark's own scripts): same scores as local mode."""
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import pyspark
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(600)
SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_workers(ui_port: int, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as resp:
                state = json.load(resp)
            if sum(w["state"] == "ALIVE" for w in state.get("workers", [])) >= n:
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{n} Spark workers did not register in {timeout}s")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(tmp_path_factory.mktemp("sparklogs")), "SPARK_NO_DAEMONIZE": "1"}
    port, ui = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    logs = tmp_path_factory.mktemp("cluster")
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env,
                              stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
             "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(logs / f"w{i}")],
            env=env, stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
    try:
        wait_for_workers(ui, 2)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_spark_submit_on_standalone_master_and_two_workers(standalone_cluster, sample_pool, cheap_run,
                                                           cheap_config_path, tmp_path):
    run = tmp_path / "run"
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", standalone_cluster,
           "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=2",
           str(REPO / "pipeline" / "cli.py"), "filter", "--pool", str(sample_pool), "--out", str(run),
           "--config", str(cheap_config_path), "--quiet"]
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    query = "select * exclude (shard) from '{}/scores/*.parquet' order by key"
    assert duckdb.sql(query.format(run)).fetchall() == duckdb.sql(query.format(cheap_run)).fetchall()
    pids = {json.loads(p.read_text())["pid"] for p in (run / "scores/_stats").glob("*.json")}
    assert len(pids) >= 2
