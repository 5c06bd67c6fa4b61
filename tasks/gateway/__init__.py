"""Pure parts of the HR gateway (the project's only internet-facing surface).

Signature checking, the rate-limit bucket and the SCIM <-> HR mapping are decisions, so
they live here as pure functions taking ``now``: no I/O, no prefect, no adapter. The HTTP
app that uses them is the top-level :mod:`gateway` package, which sits beside the CLI.
"""
