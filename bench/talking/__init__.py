"""The adherence benchmark's parts: ``data`` (held-out synthetic cases and their truth), ``probes`` (networks
that read a video back), ``metrics`` (what a reading is scored by) and ``plots`` (what people look at)."""
