"""The pipeline's steps, one module each, as plain functions of paths and config.

Each KFP component in ``components/<name>/`` is a thin wrapper that turns its artifacts into
paths and calls one of these; the benchmark's in-process baseline calls them in sequence.
"""
