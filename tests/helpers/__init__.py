"""Helpers shared by several test files (import as `from helpers.<module> import ...`; tests/ is on sys.path under
pytest). Fixtures stay in conftest.py."""
