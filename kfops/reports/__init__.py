"""Human-readable outputs: evaluation plots, the validation and drift HTML reports, and the
generated reference docs.
"""
