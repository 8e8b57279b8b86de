# pi-infer: `make run`, `make test`, `make bench`, `make install` (see README.md and docs/).
SHELL := /bin/bash
PYTHON_BASE ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
SHARED ?= $(abspath $(CURDIR)/../shared)
SOURCE ?=
CONFIG ?=
PREFIX ?= /opt/pi-infer
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
ARCH := $(shell uname -m)
# On aarch64 every dependency is pinned to versions that run on a Pi 4 (see packaging/).
CONSTRAINTS := $(if $(filter aarch64,$(ARCH)),-c packaging/constraints-$(ARCH).txt,)
# picamera2 comes from the OS (python3-picamera2); let the venv see it when present.
SYSTEM_SITE := $(shell /usr/bin/python3 -c 'import picamera2' >/dev/null 2>&1 && echo --system-site-packages)
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(PYTHON) -m pip --quiet

export PI_INFER_SHARED := $(SHARED)

.PHONY: venv run test test-system lint soak bench install install-venv install-files uninstall clean

# The system packages a target needs, from the one list packaging/system-packages.txt: installed
# when make runs as root with apt-get, otherwise named in one line with the command to run.
PACKAGE_TARGETS := run test bench e2e e2e-vm test-arm e2e-arm
.PHONY: $(PACKAGE_TARGETS:%=packages-%)
$(PACKAGE_TARGETS:%=packages-%): packages-%:
	@packaging/ensure-system-packages $*

# The test venv also gets the xnnpack engine (ExecuTorch, --no-deps, packaging/xnnpack-requirements.txt)
# so its tests run for real: PI_INFER_XNNPACK=required makes a missing executorch fail them.
$(VENV)/.deps-stamp: pyproject.toml $(wildcard packaging/constraints-*.txt) packaging/xnnpack-requirements.txt
	test -x $(PYTHON) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install --progress-bar off $(CONSTRAINTS) -e '.[test]'
	$(PIP) install --progress-bar off --no-deps -r packaging/xnnpack-requirements.txt
	touch $@

venv: $(VENV)/.deps-stamp
	$(PIP) install --no-deps -e .

run: packages-run venv
	$(PYTHON) -m pidaemon run $(if $(CONFIG),--config $(CONFIG)) $(if $(SOURCE),--source $(SOURCE))

lint: venv
	$(PYTHON) -m ruff check pidaemon tests

# Two tiers (docs/development.md): `make test` runs in-process, `make test-system` needs a process
# of its own per test (signals, exit statuses, the browser, the CLI end to end). Both spread over
# TEST_WORKERS pytest-xdist workers: most of a test's time is waiting, not computing.
# PI_INFER_TEST_CACHE keeps what the tests build once (the compiled model, the xnnpack program,
# ~1 min) across runs.
export PI_INFER_TEST_CACHE ?= $(CURDIR)/.test-cache
TEST_WORKERS ?= 3
PYTEST := PI_INFER_XNNPACK=required $(PYTHON) -m pytest -q --durations=15 -n $(TEST_WORKERS) \
  --dist loadgroup
test: packages-test venv lint
	$(PYTEST) -m "not system" tests

test-system: packages-test venv
	$(PYTEST) -m system tests

SOAK_MINUTES ?= 10
soak: venv
	$(PYTHON) -m tests.soak --minutes $(SOAK_MINUTES) --json soak-results.json

bench: packages-bench venv
	$(PIP) install --progress-bar off -e '.[litert]'
	$(PYTHON) -m pidaemon bench $(if $(CONFIG),--config $(CONFIG)) --json bench-results.json

# `pi-infer` as the service runs it: its dynamic user, cache directory and environment, so the
# weights and the compiled model land where the service looks, owned by the service's user.
AS_SERVICE := systemd-run --quiet --pipe --wait --collect -p DynamicUser=yes -p User=pi-infer \
  -p CacheDirectory=pi-infer -E TORCH_HOME=/var/cache/pi-infer/torch $(PREFIX)/venv/bin/pi-infer
# A photo of your own to check the labels with, e.g. SANITY_IMAGE=/home/pi/cat.jpg.
SANITY_IMAGE ?=
ENABLE ?= 1
PURGE ?=

install: install-venv install-files
	@if [ -n "$(DESTDIR)" ] || [ ! -d /run/systemd/system ]; then \
	  echo "installed under $(DESTDIR)$(PREFIX); no running systemd here: nothing started"; exit 0; fi; \
	set -e; systemctl daemon-reload; \
	echo "== preparing the model as the service user (the first time: download and compile)"; \
	$(AS_SERVICE) prepare --config $(SYSCONFDIR)/pi-infer.yaml; \
	if [ -n "$(SANITY_IMAGE)" ]; then \
	  echo "== sanity check: the labels of $(SANITY_IMAGE)"; \
	  $(PREFIX)/venv/bin/pi-infer classify --config $(SYSCONFDIR)/pi-infer.yaml $(SANITY_IMAGE); fi; \
	if [ "$(ENABLE)" = 1 ]; then \
	  systemctl enable pi-infer; systemctl restart pi-infer; \
	  echo "== pi-infer is running: journalctl -u pi-infer -f"; \
	else echo "== installed, not enabled: systemctl enable --now pi-infer"; fi

install-venv:
	test -x $(DESTDIR)$(PREFIX)/venv/bin/python || \
	  $(PYTHON_BASE) -m venv $(SYSTEM_SITE) $(DESTDIR)$(PREFIX)/venv
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(DESTDIR)$(PREFIX)/venv/bin/python -m pip install \
	  --progress-bar off $(CONSTRAINTS) '.[mqtt,metrics]' $(if $(SYSTEM_SITE),simplejpeg)

install-files:
	install -D -m 644 systemd/pi-infer.service $(DESTDIR)$(UNITDIR)/pi-infer.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml ]; then \
	  echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml"; \
	else install -D -m 644 etc/pi-infer.yaml $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml; fi

uninstall:
	-[ -z "$(DESTDIR)" ] && systemctl disable --now pi-infer 2>/dev/null
	rm -f $(DESTDIR)$(UNITDIR)/pi-infer.service
	-[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
	rm -rf $(DESTDIR)$(PREFIX)
	@if [ "$(PURGE)" = 1 ]; then \
	  rm -rf $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml $(DESTDIR)/var/cache/pi-infer \
	    $(DESTDIR)/var/cache/private/pi-infer; \
	  echo "removed $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml and the caches"; \
	else echo "kept $(DESTDIR)$(SYSCONFDIR)/pi-infer.yaml (PURGE=1 removes it and the caches)"; fi

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache .test-cache bench-results.json \
	  soak-results.json

-include mk/*.mk
