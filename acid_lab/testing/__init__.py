"""The suite's pytest machinery (registered by conftest.py with ``pytest_plugins``)."""
