"""Photogenic pipeline: core (config, run layout, storage), pool formats, filtering, selection, export, report, CLI."""
