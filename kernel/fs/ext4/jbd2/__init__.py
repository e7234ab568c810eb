"""jbd2: the journal of ext3/ext4 (fs/jbd2). ``recovery`` replays a dirty log."""
