"""The block layer: block devices, the buffer cache, partitions, virtio-blk."""
