"""Photogenic pipeline: config, pool readers, the Spark filter job, selection, export, report, CLI."""
__version__ = "0.1.0"
