"""The dual-agent model family: criteria matching + evidence binding on a shared encoder,
trained on ReDSM5-format posts (see docs/dual_agent.md)."""
