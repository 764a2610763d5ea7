"""The SIP/XCCOS load generator: profiles, load processes, the raw-writer ceiling, reports."""
