"""The virtio ABI used by the block device: feature bits, status, structures.

Values and layouts follow the Virtual I/O Device (VIRTIO) specification 1.x,
section 2 (basic facilities), 4.2 (virtio over MMIO) and 5.2 (block device).
Everything on the wire is little-endian.
"""

from __future__ import annotations

from ...lib.cstruct import CStruct

# Device status field (2.1)
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
STATUS_FAILED = 128

# Reserved (transport) feature bits (6)
F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_VERSION_1 = 32
F_ACCESS_PLATFORM = 33
F_RING_PACKED = 34

# Block device feature bits (5.2.3)
BLK_F_SIZE_MAX = 1
BLK_F_SEG_MAX = 2
BLK_F_GEOMETRY = 4
BLK_F_RO = 5
BLK_F_BLK_SIZE = 6
BLK_F_FLUSH = 9
BLK_F_TOPOLOGY = 10
BLK_F_CONFIG_WCE = 11
BLK_F_MQ = 12
BLK_F_DISCARD = 13
BLK_F_WRITE_ZEROES = 14

# Request types (5.2.6)
BLK_T_IN = 0
BLK_T_OUT = 1
BLK_T_FLUSH = 4
BLK_T_GET_ID = 8
BLK_T_GET_LIFETIME = 10
BLK_T_DISCARD = 11
BLK_T_WRITE_ZEROES = 13
BLK_T_SECURE_ERASE = 14

# Request status byte
BLK_S_OK = 0
BLK_S_IOERR = 1
BLK_S_UNSUPP = 2

BLK_ID_BYTES = 20
SECTOR_SIZE = 512
SECTOR_SHIFT = 9

DEVICE_ID_BLOCK = 2

# Split virtqueue (2.7)
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

virtq_desc = CStruct("virtq_desc", "<", [
    ("addr", "Q"), ("len", "I"), ("flags", "H"), ("next", "H"),
], size=16)

virtq_used_elem = CStruct("virtq_used_elem", "<", [
    ("id", "I"), ("len", "I"),
], size=8)

virtio_blk_outhdr = CStruct("virtio_blk_outhdr", "<", [
    ("type", "I"), ("ioprio", "I"), ("sector", "Q"),
], size=16)

virtio_blk_discard_write_zeroes = CStruct("virtio_blk_discard_write_zeroes", "<", [
    ("sector", "Q"), ("num_sectors", "I"), ("flags", "I"),
], size=16)
BLK_WRITE_ZEROES_FLAG_UNMAP = 1

virtio_blk_config = CStruct("virtio_blk_config", "<", [
    ("capacity", "Q"),
    ("size_max", "I"),
    ("seg_max", "I"),
    ("cylinders", "H"), ("heads", "B"), ("sectors", "B"),
    ("blk_size", "I"),
    ("physical_block_exp", "B"), ("alignment_offset", "B"),
    ("min_io_size", "H"), ("opt_io_size", "I"),
    ("writeback", "B"), ("unused0", "B"), ("num_queues", "H"),
    ("max_discard_sectors", "I"), ("max_discard_seg", "I"),
    ("discard_sector_alignment", "I"),
    ("max_write_zeroes_sectors", "I"), ("max_write_zeroes_seg", "I"),
    ("write_zeroes_may_unmap", "B"), ("unused1", "3s"),
], size=60)

# virtio-mmio register map (4.2.2), offsets from the device's base.
MMIO_MAGIC_VALUE = 0x000  # 0x74726976, "virt"
MMIO_VERSION = 0x004  # 2 for the non-legacy interface
MMIO_DEVICE_ID = 0x008
MMIO_VENDOR_ID = 0x00C
MMIO_DEVICE_FEATURES = 0x010
MMIO_DEVICE_FEATURES_SEL = 0x014
MMIO_DRIVER_FEATURES = 0x020
MMIO_DRIVER_FEATURES_SEL = 0x024
MMIO_QUEUE_SEL = 0x030
MMIO_QUEUE_NUM_MAX = 0x034
MMIO_QUEUE_NUM = 0x038
MMIO_QUEUE_READY = 0x044
MMIO_QUEUE_NOTIFY = 0x050
MMIO_INTERRUPT_STATUS = 0x060
MMIO_INTERRUPT_ACK = 0x064
MMIO_STATUS = 0x070
MMIO_QUEUE_DESC_LOW = 0x080
MMIO_QUEUE_DESC_HIGH = 0x084
MMIO_QUEUE_DRIVER_LOW = 0x090
MMIO_QUEUE_DRIVER_HIGH = 0x094
MMIO_QUEUE_DEVICE_LOW = 0x0A0
MMIO_QUEUE_DEVICE_HIGH = 0x0A4
MMIO_CONFIG_GENERATION = 0x0FC
MMIO_CONFIG = 0x100
MMIO_MAGIC = 0x74726976
MMIO_INT_VRING = 1
MMIO_INT_CONFIG = 2
