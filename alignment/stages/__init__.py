"""Pipeline stages: one module per stage type, each listed once in `registry.py`."""
