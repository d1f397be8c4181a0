"""Pure builders: spec in, Kubernetes object out.

They import neither kopf nor a client and never read the environment; the same inputs
always give the same dict (env vars, ports and volumes sorted), so re-applying the
output changes nothing.
"""
