"""Shared helpers: atomic file I/O and hashing, input validation, strict config types,
all-or-nothing artefact sets, folder locks, disk guards and device resolution."""
