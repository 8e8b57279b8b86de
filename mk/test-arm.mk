# `make test-arm`: pi-infer on an emulated Raspberry Pi 4 CPU (QEMU user mode, QEMU_CPU=cortex-a72)
# in an arm64 Debian userland with the pinned aarch64 wheels: check-config, classify, run, train,
# and a probe proving the emulated CPU lacks LSE atomics. Needs root (it installs its packages from
# packaging/system-packages.txt). Warm: ~2 min; the first run also builds the
# userland and wheel caches under /var/cache/pi-infer-ci (~5 min).
# `make test-arm ARM_TORCH=2.10.0` installs a torch known to crash on the Pi 4: it must fail with
# pi-infer's "this torch crashes on Cortex-A72" refusal.
ARM_TORCH ?=
ARM_TORCHVISION ?=
.PHONY: test-arm
test-arm: packages-test-arm venv
	ARM_TORCH=$(ARM_TORCH) ARM_TORCHVISION=$(ARM_TORCHVISION) \
	  bash tests/arm/run.sh "$(PYTHON)" "$(SHARED)"
