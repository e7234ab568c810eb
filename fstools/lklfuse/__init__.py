"""lklfuse."""
