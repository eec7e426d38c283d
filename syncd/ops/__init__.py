"""Running syncd for operators: sd_notify, request ids, logs, metrics, status.

Nothing here receives, applies or fetches events; these modules observe and
report, and never print a payload, a secret or customer data.
"""
