"""Pure logic, no vendor SDK: the model format, evaluation and the gate, drift statistics, the
retrain policy, the rollout decision, splits, windows and file helpers.

Everything here takes frames, arrays, paths and pydantic configs and returns results; a test
needs no service. ``tests/unit/test_architecture.py`` keeps it so.
"""
