"""Helper servers beside a predictor: the KServe logger's CloudEvent sink and the local traffic
split, with the small ASGI pieces they share.
"""
