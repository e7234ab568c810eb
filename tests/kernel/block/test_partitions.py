"""Partition tables made by sfdisk and sgdisk, read as Linux numbers them, checked against sfdisk."""

from __future__ import annotations

import json
import os

import pytest
from helpers import need_tool, run

from kernel import Kernel


def _blank(path, size: int = 32 << 20) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return os.fspath(path)


def _sfdisk_json(path: str) -> list[dict]:
    out = json.loads(run("sfdisk", "--json", path).stdout)
    return out["partitiontable"]["partitions"]


def _number(node: str, path: str) -> int:
    return int(node[len(path):])


def test_mbr_primary_extended_and_logical(tmp_path) -> None:
    need_tool("sfdisk")
    path = _blank(tmp_path / "mbr.img")
    script = "\n".join([
        "label: dos",
        "start=2048, size=4096, type=83",
        "start=6144, size=2048, type=82",
        "start=8192, size=40960, type=5",
        "start=10240, size=2048, type=83",
        "start=14336, size=4096, type=8e",
        "start=20480, size=2048, type=7",
    ]) + "\n"
    run("sfdisk", "-q", path, input=script)
    ref = {_number(p["node"], path): p for p in _sfdisk_json(path)}
    assert sorted(ref) == [1, 2, 3, 5, 6, 7]
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert disk.table == "dos"
        ours = {p.number: p for p in disk.partitions}
        assert sorted(ours) == sorted(ref)
        for n, p in ref.items():
            assert ours[n].start == p["start"]
            assert ours[n].type == "0x" + p["type"].rjust(2, "0")
            if n == 3:
                assert ours[n].extended and ours[n].size == 2  # Linux: a 1 KiB stub
            else:
                assert ours[n].size == p["size"] and not ours[n].extended
                assert k.disk_add and disk.part_bdevs[n].size == p["size"] * 512
        st = k.sys.stat("/dev/vda5")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (254, 5)
        # partition I/O is relative to the partition start
        with open(path, "r+b") as f:
            f.seek(14336 * 512)
            f.write(b"logical-six")
        assert disk.part_bdevs[6].read(0, 512)[:11] == b"logical-six"


def test_gpt_partitions_by_slot(tmp_path) -> None:
    need_tool("sgdisk", "sfdisk")
    path = _blank(tmp_path / "gpt.img")
    run("sgdisk", "-n", "1:2048:+1M", "-t", "1:8300", "-c", "1:root",
        "-n", "2:0:+2M", "-t", "2:ef00", "-c", "2:EFI system",
        "-n", "5:0:+3M", "-t", "5:8200", "-c", "5:swap", path)
    ref = {_number(p["node"], path): p for p in _sfdisk_json(path)}
    assert sorted(ref) == [1, 2, 5]
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert disk.table == "gpt"
        ours = {p.number: p for p in disk.partitions}
        assert sorted(ours) == [1, 2, 5]
        for n, p in ref.items():
            assert (ours[n].start, ours[n].size) == (p["start"], p["size"])
            assert ours[n].type == p["type"].upper()
            assert ours[n].name == p["name"]
        assert ours[1].type_name == "Linux filesystem"
        assert ours[2].type_name == "EFI System"


def test_gpt_with_a_damaged_primary_header_uses_the_backup(tmp_path) -> None:
    need_tool("sgdisk")
    path = _blank(tmp_path / "gpt.img")
    run("sgdisk", "-n", "1:2048:+1M", "-n", "2:0:+1M", path)
    with Kernel(mb=8) as k:
        good = [(p.number, p.start, p.size) for p in k.disk_add(path, readonly=True).partitions]
    with open(path, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"\xff" * 8)  # breaks the primary header's CRC
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert [(p.number, p.start, p.size) for p in disk.partitions] == good
    # both copies damaged: no partitions, a warning, and the disk still attaches
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - 512 + 40)
        f.write(b"\xff" * 8)
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert disk.partitions == []
        assert any("damaged" in line for line in k.dmesg.records)


def test_no_table_and_a_fat_boot_sector_are_not_partition_tables(tmp_path) -> None:
    path = _blank(tmp_path / "plain.img", 1 << 20)
    with Kernel(mb=8) as k:
        assert k.disk_add(path, readonly=True).table is None
    with open(path, "r+b") as f:
        sector = bytearray(512)
        sector[446] = 0x29  # an entry whose boot indicator is neither 0x00 nor 0x80
        sector[510:512] = b"\x55\xaa"
        f.write(sector)
    with Kernel(mb=8) as k:
        assert k.disk_add(path, readonly=True).table is None


def test_extended_chain_loop_terminates(tmp_path) -> None:
    path = _blank(tmp_path / "loop.img", 1 << 20)
    import struct

    with open(path, "r+b") as f:
        mbr = bytearray(512)
        struct.pack_into("<B3sB3sII", mbr, 446, 0, b"", 0x05, b"", 100, 1000)
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
        ebr = bytearray(512)
        struct.pack_into("<B3sB3sII", ebr, 446, 0, b"", 0x83, b"", 10, 20)
        struct.pack_into("<B3sB3sII", ebr, 462, 0, b"", 0x05, b"", 0, 50)  # links to itself
        ebr[510:512] = b"\x55\xaa"
        f.seek(100 * 512)
        f.write(ebr)
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert [p.number for p in disk.partitions] == [1, 5]


@pytest.mark.parametrize("count", [1, 20])
def test_partition_numbers_beyond_the_minor_range(tmp_path, count: int) -> None:
    need_tool("sgdisk")
    path = _blank(tmp_path / "many.img", 64 << 20)
    args = []
    for i in range(1, count + 1):
        args += ["-n", f"{i}:0:+1M"]
    run("sgdisk", *args, path)
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        assert [p.number for p in disk.partitions] == list(range(1, count + 1))
        devs = {k.sys.stat(f"/dev/vda{i}").st_rdev for i in range(1, count + 1)}
        assert len(devs) == count
