"""Datasets: canonical form, readers, registry and cache."""
