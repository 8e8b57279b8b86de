# `make e2e-arm`: the Raspberry Pi user's path, `sudo make install`, `systemctl start pi-infer`,
# journalctl, reload, stop, uninstall, on the arm64 Debian userland of `make test-arm` booted with
# systemd as PID 1 in systemd-nspawn under QEMU user emulation (QEMU_CPU=cortex-a72). Needs root
# (it installs its packages from packaging/system-packages.txt). See docs/proofs.md for its times;
# the first run also builds the userland and the aarch64 wheel caches under /var/cache/pi-infer-ci.
.PHONY: e2e-arm
e2e-arm: packages-e2e-arm venv
	bash tests/e2e/arm/run.sh "$(PYTHON)" "$(SHARED)"
