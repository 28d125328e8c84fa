"""Which driver address get_spark pins: only for a local master, never over what spark-submit set."""
import pytest

from photogenic.pipeline.core.spark import driver_address_conf, is_local_master, session_defaults

BOTH = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


@pytest.mark.parametrize("master", [None, "", "local", "local[2]", "local[*]", "local[4,3]", "local-cluster[2,1,1024]"])
def test_local_masters(master):
    assert is_local_master(master)
    assert driver_address_conf(master, {}) == BOTH


@pytest.mark.parametrize("master", ["spark://10.0.0.1:7077", "yarn", "k8s://https://k8s:443", "localhost:7077",
                                    "local-cluster", "spark://local[2]"])
def test_cluster_masters_pin_nothing(master):
    assert not is_local_master(master)
    assert driver_address_conf(master, {}) == {}


def test_local_ip_is_used():
    assert driver_address_conf("local[2]", {}, "10.1.2.3") == {
        "spark.driver.host": "10.1.2.3", "spark.driver.bindAddress": "10.1.2.3"}


def test_master_from_spark_submit():
    # get_spark passes master=None under spark-submit: the submitted --master decides.
    assert driver_address_conf(None, {"spark.master": "spark://10.0.0.1:7077"}) == {}
    assert driver_address_conf(None, {"spark.master": "local[2]"}) == BOTH


def test_explicit_master_wins_over_submitted():
    assert driver_address_conf("local[1]", {"spark.master": "spark://10.0.0.1:7077"}) == BOTH


def test_submitted_values_are_kept():
    submitted = {"spark.master": "local[2]", "spark.driver.host": "10.0.0.5"}
    assert driver_address_conf(None, submitted) == {"spark.driver.bindAddress": "127.0.0.1"}
    submitted["spark.driver.bindAddress"] = "0.0.0.0"
    assert driver_address_conf(None, submitted) == {}


def test_session_defaults_keep_submitted_executor_env():
    environ = {"PYSPARK_PYTHON": "/venv/python", "OMP_NUM_THREADS": "1", "PHOTOGENIC_WORKER_THREADS": "1",
               "SPARK_LOCAL_IP": "10.9.0.1"}
    submitted = {"spark.master": "spark://10.9.0.1:7077", "spark.executorEnv.PYSPARK_PYTHON": "/cluster/python"}
    assert session_defaults(None, submitted, environ) == {
        "spark.executorEnv.OMP_NUM_THREADS": "1", "spark.executorEnv.PHOTOGENIC_WORKER_THREADS": "1"}
    assert session_defaults("local[2]", {}, environ) == {
        "spark.driver.host": "10.9.0.1", "spark.driver.bindAddress": "10.9.0.1",
        "spark.executorEnv.PYSPARK_PYTHON": "/venv/python", "spark.executorEnv.OMP_NUM_THREADS": "1",
        "spark.executorEnv.PHOTOGENIC_WORKER_THREADS": "1"}
