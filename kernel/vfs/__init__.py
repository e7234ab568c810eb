"""The virtual filesystem: mounts, path walk, dentries, inodes, files, credentials."""
