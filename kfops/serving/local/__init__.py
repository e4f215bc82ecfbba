"""The model server on one machine: the detached process, the local canary, the client and the
deploy smoke test, and file-to-file batch scoring.
"""
