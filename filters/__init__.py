"""Filters: small classes behind one protocol (see `filters.base`), with no Spark inside."""
