"""fs2tar."""
