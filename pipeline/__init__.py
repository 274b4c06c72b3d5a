"""Thresher's pipeline, in four layers; each imports only the layers above it in this list
(tests/test_imports.py enforces it):

- core/      what a stage is and how files are kept: the stage contract, the canonical columns,
             storage (local paths and object stores), atomic file writes, the machine's cache.
- toolkit/   map-reduce helpers that global passes build on: rows grouped by key across shards,
             connected components, dedup indexes kept for later runs.
- engine/    what runs a pipeline: the YAML config, the stage registry, ingest, the runner and its
             executors (inline, Ray), checkpoints and the work dir, locks, publishing, the manifest.
- commands/  what users call: the `thresher` CLI and the commands built on the engine (demo,
             report, ablate, export, the weighted sampler).

Stages (stages/) use core/ and toolkit/ only; the engine finds them by discovery and names none.
"""
