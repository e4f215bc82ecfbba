"""The wire: V1 and V2 (Open Inference Protocol) request decoding, validation and response
encoding, and the hot-path column encoder. No HTTP server, no KServe.
"""
