"""The wire: V1 and V2 (Open Inference Protocol) request decoding, validation and response
encoding, the hot-path column encoder, and the ASGI body reader and JSON response every kfops
server shares. No HTTP server, no KServe.
"""
