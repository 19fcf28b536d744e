"""Backups of every stateful part of one install, and their restore (`ai-assistant backup ...`).

A backup is a directory (data/, config/, redis/ and manifest.json) assembled from consistent copies: SQLite through
its online backup API, Redis through a completed BGSAVE, everything else copied. restic uploads it, encrypted on the
host, to the S3 bucket that infra/ creates; restore brings it back into a staging directory, verifies it, and swaps
it in (docs/adr/0091-backups-with-restic.md).
"""
