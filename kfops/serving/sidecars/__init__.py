"""Helper servers beside a predictor: the KServe logger's CloudEvent sink and the local traffic
split (their ASGI pieces are shared with the model server: :mod:`kfops.serving.protocol.asgi`).
"""
