"""Experiments: many specs -> records (suites, tuning, executors that run cells)."""
