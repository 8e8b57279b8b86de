"""Execute one ARMv8.1 LSE atomic (LDADDAL), the instruction behind the Pi 4 torch crashes.

On an ARMv8.0 CPU such as the Pi 4's Cortex-A72 the process dies with SIGILL; where LSE exists it
prints the atomic add's result. Runs in the emulated arm64 guest, to prove its CPU model is strict.
"""

import ctypes
import mmap
import struct

# uint64_t add(uint64_t *p, uint64_t n): ldaddal x1, x0, [x0] (returns the old *p); ret
CODE = struct.pack("<2I", 0xF8E10000, 0xD65F03C0)


def main() -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    add = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64)(
        address
    )
    value = ctypes.c_uint64(37)
    old = add(ctypes.byref(value), 5)
    print(f"ldaddal: {old} + 5 -> {value.value}")


if __name__ == "__main__":
    main()
