"""trainctl: the operator CLI over the trainer API (submit, follow, inspect runs; the demo).

It installs without torch: the worker-side commands (`trainctl worker`, the checkpoint
tools) come from the worker package when it is installed (see `worker_commands`).
"""
