"""Shared fixtures live in tests/fixtures/, one module per component they start."""

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.dataverse",
    "tests.fixtures.dovecot",
    "tests.fixtures.stack",
]
