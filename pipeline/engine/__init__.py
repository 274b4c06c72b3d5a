"""Runs pipelines: config, registry, ingest, runner, executors, checkpoints, work dir, manifest."""
