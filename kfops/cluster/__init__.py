"""What a cluster needs from kfops that is plain data: the profile from Terraform outputs, the
container images and ``kfops doctor``'s reading of a compiled pipeline. The API clients are in
:mod:`kfops.adapters`.
"""
