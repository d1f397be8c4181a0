"""The node agent: a "process kubelet" that runs our pods as local processes (see ../README.md)."""
