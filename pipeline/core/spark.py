"""Spark session: local[*] by default, any master (local-cluster, standalone, YARN, k8s) by config."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from photogenic.pipeline.core.config import Config

DEFAULT_JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"


def spark_env() -> dict[str, str]:
    """Environment a Spark driver and its Python workers need; applied to os.environ."""
    env = {
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        # Workers load models with one thread each: Spark already runs one task per core.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PHOTOGENIC_WORKER_THREADS": os.environ.get("PHOTOGENIC_WORKER_THREADS", "1"),
    }
    if "JAVA_HOME" not in os.environ and Path(DEFAULT_JAVA_HOME).exists():
        env["JAVA_HOME"] = DEFAULT_JAVA_HOME
    os.environ.update(env)
    return env


def parse_conf(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--conf expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\])?|local-cluster\[[^\]]*\]")
DRIVER_ADDRESS_KEYS = ("spark.driver.host", "spark.driver.bindAddress")


def is_local_master(master: str | None) -> bool:
    """local, local[...], local-cluster[...]; no master at all is Spark's default, local[*]."""
    return not master or _LOCAL_MASTER.fullmatch(master.strip()) is not None


def driver_address_conf(master: str | None, submitted: Mapping[str, str],
                        local_ip: str = "127.0.0.1") -> dict[str, str]:
    """The driver host/bindAddress to set: local_ip, only for a local master and only for the keys that
    spark-submit or the cluster did not already set. On a cluster, executors on other hosts must reach
    the driver at an address the cluster chose, so nothing is pinned there."""
    if master is None:
        master = submitted.get("spark.master")
    if not is_local_master(master):
        return {}
    return {key: local_ip for key in DRIVER_ADDRESS_KEYS if key not in submitted}


EXECUTOR_ENV = ("PHOTOGENIC_WORKER_THREADS", "OMP_NUM_THREADS", "PYSPARK_PYTHON")


def session_defaults(master: str | None, submitted: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Driver address (local masters only) and executor env from `environ`, less what `submitted` has."""
    executor_env = {f"spark.executorEnv.{name}": environ[name] for name in EXECUTOR_ENV if name in environ}
    return {
        **driver_address_conf(master, submitted, environ.get("SPARK_LOCAL_IP") or "127.0.0.1"),
        **{key: value for key, value in executor_env.items() if key not in submitted},
    }


def submitted_conf() -> dict[str, str]:
    """What the JVM's SparkConf already holds: under spark-submit, its --master/--conf and spark-defaults."""
    from pyspark import SparkConf

    return dict(SparkConf().getAll())


def get_spark(config: Config | None = None, master: str | None = None, conf: dict[str, str] | None = None):
    """A SparkSession; reuses the active one when it matches (tests share one per module)."""
    spark_env()
    from pyspark.sql import SparkSession

    config = config or Config()
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = config.spark.master  # under spark-submit, its --master wins
    explicit = {**config.spark.conf, **(conf or {})}
    defaults = session_defaults(explicit.get("spark.master") or master, submitted_conf(), os.environ)
    builder = (
        SparkSession.builder.appName(config.spark.app_name)
        .config("spark.driver.memory", config.spark.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if master:
        builder = builder.master(master)
    for key, value in {**defaults, **explicit}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
