"""The HR gateway: ``vibecode gateway`` serves signed HR webhooks and SCIM 2.0 and starts
onboarding/offboarding flow runs on Prefect with ``run_deployment``.

It sits beside the CLI, above ``flows/`` in the layering: it names deployments, never
imports a flow. Its decisions (signatures, rate limits, SCIM <-> HR) are pure functions
in :mod:`tasks.gateway`; this package is the HTTP and I/O around them.
"""
