"""Dagster wiring: thin definitions over the plain pipeline modules."""
