"""A USB stick's disk image for an emulated device (Device.plug_usb_stick): an MBR with one
FAT partition holding files, made with mtools (no loop device, no mount), as a stick comes
from a shop."""
import os
import subprocess
from pathlib import Path

MIB = 1024 * 1024
FIRST_SECTOR = 2048  # the partition starts at 1 MiB, as fdisk puts it


def make_usb_stick(image: Path, *files: Path) -> Path:
    size = (sum(f.stat().st_size for f in files) // MIB + 16) * MIB  # the files and FAT's own
    partition = image.with_name(image.name + ".part")
    partition.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-C", "-n", "TERN-USB", str(partition), str(size // 1024)],
                   check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for path in files:
        subprocess.run(["mcopy", "-i", str(partition), str(path), "::/"], check=True, env=env)
    with open(image, "wb") as disk:
        disk.truncate(FIRST_SECTOR * 512 + size)
    subprocess.run(["sfdisk", "-q", str(image)], check=True,
                   input=f"label: dos\nstart={FIRST_SECTOR}, type=c\n".encode())
    subprocess.run(["dd", f"if={partition}", f"of={image}", "bs=1M", f"seek={FIRST_SECTOR * 512}",
                    "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"], check=True)
    partition.unlink()
    return image
