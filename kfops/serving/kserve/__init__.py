"""The KServe adapter: the predictor (a ``kserve.Model``), the ASGI front with its fast path,
the ModelServer and the raw-request transformer. The only serving modules that import kserve.
"""
