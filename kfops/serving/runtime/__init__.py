"""The serving core: the inference engine, adaptive batching, model loading, online feature
lookups, metrics and the inference log store. No HTTP server, no KServe.
"""
