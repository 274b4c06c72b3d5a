"""Map-reduce helpers for global passes: shuffles by key, connected components, dedup indexes."""
