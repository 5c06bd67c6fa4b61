"""Registering the flows with a Prefect server: prefect.yaml read into typed specs (spec.py,
pure) and applied through Prefect's Python API (register.py)."""
