"""Shared helpers: structure declarations and checksums."""
