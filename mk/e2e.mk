# `make e2e`: pi-infer under a real systemd 252 booted in systemd-nspawn: start, journal,
# reload, watchdog restart and stop, as a user drives them. Needs root (it installs its packages
# from packaging/system-packages.txt). Takes a few minutes; the first run also
# builds the service's venv under /var/cache/pi-infer-ci (about a minute, ~6 GB).
.PHONY: e2e
e2e: packages-e2e venv
	bash tests/e2e/nspawn/run.sh "$(PYTHON)" "$(SHARED)"
