"""The `thresher` CLI and the commands built on the engine."""
