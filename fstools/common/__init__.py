"""Shared pieces of the front ends."""
