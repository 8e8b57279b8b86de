"""Copy the kernel modules the guest needs, with their dependencies, into the rootfs.

Usage: kmods.py SRC_MODULE_DIR DST_MODULE_DIR INITRD_LIST

The full module tree is ~390 MB; the guest needs only virtio, 9p, ext4 and the media test
drivers (vivid). INITRD_LIST receives, in load order, the modules the initramfs must insmod
to mount an ext4 root on virtio-blk.
"""

import re
import shutil
import sys
from pathlib import Path

ROOTFS_MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "9p",
    "9pnet_virtio",
    "ext4",
    "crc32c_generic",
    "crc32c_intel",
    "overlay",
    "autofs4",
]
INITRD_MODULES = ["crc32c_generic", "virtio_pci", "virtio_blk", "ext4"]


def main(src: Path, dst: Path, initrd_list: Path) -> None:
    deps: dict[str, list[str]] = {}
    for line in (src / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\..*)?$", "", Path(p).name).replace("-", "_"): p for p in deps}

    def closure(names: list[str]) -> list[str]:
        ordered: list[str] = []

        def visit(path: str) -> None:
            for dep in deps[path]:
                visit(dep)
            if path not in ordered:
                ordered.append(path)

        for name in names:
            visit(by_name[name])
        return ordered

    media_test = [n for n, p in by_name.items() if "/drivers/media/test-drivers/" in p]
    for path in closure(ROOTFS_MODULES + media_test):
        (dst / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / path, dst / path)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        shutil.copy2(src / name, dst / name)
    initrd_list.write_text("".join(p + "\n" for p in closure(INITRD_MODULES)))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
