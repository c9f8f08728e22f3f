"""Email Router for Dynamics 365: the shared library behind every function."""
