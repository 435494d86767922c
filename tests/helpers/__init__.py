"""Plain helpers shared by test modules (fixtures live in the conftest.py files)."""
