"""The test suite, one package: each module and conftest is loaded under one name (tests.<folder>.<module>)."""
