"""A stand-in for vLLM used by the supervision tests (see api_server.py)."""
