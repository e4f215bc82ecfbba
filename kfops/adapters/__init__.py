"""The only modules that import a vendor SDK (MLflow, Feast, Great Expectations, Evidently, KFP,
Kubernetes, S3): one module per tool, each importing its SDK lazily, inside the functions that
need it. Callers that want another backend (a test, a second registry) pass one in.
"""
