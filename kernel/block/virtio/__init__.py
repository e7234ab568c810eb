"""virtio-blk: the ABI, split virtqueues, the MMIO transport, the driver and the host device."""
