"""Declarative description of each source dataset (one YAML file per source)."""
