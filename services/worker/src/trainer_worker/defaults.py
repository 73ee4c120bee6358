"""Worker defaults, each with the reason it is that number."""

from __future__ import annotations

# One SET every 5 s is nothing for Redis and lets a dead worker be noticed within a minute.
HEARTBEAT_INTERVAL_S = 5.0
# Twelve missed beats. Beats come from their own thread, so a long eval, save or
# torch.compile never looks like a dead worker; a minute of silence really is one.
STALE_HEARTBEAT_S = 60.0
# The loop checks the cancel flag every step; a minute covers a slow eval or checkpoint save.
CANCEL_GRACE_S = 60.0
# Progress events feed DMs and progress bars: faster than a person reads is wasted.
PROGRESS_EVERY_S = 2.0
# Cancellation sweeps and (later) stale-run checks: cheap scans, so every 10 s.
MAINTENANCE_INTERVAL_S = 10.0
