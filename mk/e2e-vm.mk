# make e2e-vm: a Debian 12 VM under QEMU (real kernel, systemd as PID 1, vivid as /dev/video0)
# proves `systemctl start pi-infer` turns camera frames into journal lines. Runs as root; the
# image and the guest venv are built on first use and cached in /var/cache/pi-infer-e2e.
.PHONY: e2e-vm
e2e-vm: packages-e2e-vm venv
	PYTHON="$(abspath $(PYTHON))" SHARED="$(SHARED)" tests/e2e/vm/run.sh
