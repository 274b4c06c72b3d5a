"""The stage contract, the canonical columns, storage and files: what every other layer builds on."""
