"""The back-office HTTP API (FastAPI): users, roles, API keys, audit, and the resources the
collection O&M, billing and fee-collection teams work with."""
