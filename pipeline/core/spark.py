"""Spark session: local[*] by default, any master (local-cluster, standalone, YARN, k8s) by config."""
from __future__ import annotations

import os
import sys
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


def get_spark(config: Config | None = None, master: str | None = None, conf: dict[str, str] | None = None):
    """A SparkSession; reuses the active one when it matches (tests share one per module)."""
    spark_env()
    from pyspark.sql import SparkSession

    config = config or Config()
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = config.spark.master  # under spark-submit, its --master wins
    builder = (
        SparkSession.builder.appName(config.spark.app_name)
        .config("spark.driver.memory", config.spark.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executorEnv.PHOTOGENIC_WORKER_THREADS", os.environ["PHOTOGENIC_WORKER_THREADS"])
        .config("spark.executorEnv.OMP_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
        .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"])
    )
    if master:
        builder = builder.master(master)
    for key, value in {**config.spark.conf, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
