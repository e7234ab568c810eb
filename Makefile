# Two commands for a fresh Debian or Ubuntu machine:
#   make demo   set everything up, then export the sample image to a tar archive
#   make test   set everything up, then run ruff, mypy and the whole test suite
# Set-up: missing system packages (apt-get, with sudo when not root), a virtual
# environment in .venv, and the project installed in it (editable).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SYS_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
APT_PACKAGES := python3 python3-venv python3-dev build-essential pkg-config \
	fuse3 libfuse3-dev e2fsprogs btrfs-progs xfsprogs liblzo2-dev \
	libarchive13 libarchive-tools tar zstd fdisk gdisk attr acl
DEMO_IMAGE := tests/images/demo-ext4.img.zst
WORK := build/demo
PYTEST_ARGS ?=

.PHONY: all deps venv native demo test lint typecheck pytest bench images fuzz profile clean

all: test

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | deps
	test -x $(PY) || $(SYS_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The kernel's hot modules compiled with mypyc (kernel/native.py): rebuilt when a source
# they may import changes; should it fail, the Python modules run (slower).
NATIVE := kernel/_native/manifest.json
NATIVE_SOURCES := $(wildcard kernel/*.py kernel/lib/*.py kernel/block/*.py \
	kernel/block/virtio/*.py kernel/fs/*.py kernel/fs/ext4/*.py kernel/fs/ext4/jbd2/*.py kernel/vfs/*.py)

$(NATIVE): $(NATIVE_SOURCES) | $(VENV)/.installed
	@mkdir -p build
	@echo "Compiling the kernel's hot modules with mypyc (a minute or two; log: build/native.log)"
	@$(PY) -m kernel.nativebuild >build/native.log 2>&1 && tail -1 build/native.log || \
	  { tail -5 build/native.log; echo "warning: no compiled modules; the Python ones will run"; }

native: $(NATIVE)

venv: deps $(VENV)/.installed $(NATIVE)

demo: venv
	@mkdir -p $(WORK)
	zstd -dqf $(DEMO_IMAGE) -o $(WORK)/demo.img
	@echo "== fs2tar $(WORK)/demo.img $(WORK)/demo.tar (type and partition detected)"
	$(VENV)/bin/fs2tar $(WORK)/demo.img $(WORK)/demo.tar
	@echo "== what GNU tar sees in the archive:"
	tar --xattrs --numeric-owner -tvf $(WORK)/demo.tar
	@echo "== the image is unchanged (read-only tools never write a byte):"
	zstd -dqc $(DEMO_IMAGE) | cmp - $(WORK)/demo.img && echo "   demo.img identical to the shipped image"

lint: venv
	$(VENV)/bin/ruff check kernel fstools tests $(wildcard bench)

typecheck: venv
	$(VENV)/bin/mypy

# The suite runs on the compiled modules (what the tools run), then on the Python ones
# (the fallback, and the tests that patch module internals): PYTEST_PASSES="require 0".
PYTEST_PASSES ?= require 0
pytest: venv
	@for n in $(PYTEST_PASSES); do \
	  echo "== pytest with LKL_NATIVE=$$n"; \
	  LKL_NATIVE=$$n $(PY) -m pytest $(PYTEST_ARGS) || exit 1; \
	done

test: deps venv lint typecheck pytest

# Peers, datasets and plotting, for the benchmarks only: fuse2fs, debootstrap (a Debian
# root with device nodes and hard links) and matplotlib.
bench: venv
	@for p in fuse2fs debootstrap; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || \
	  { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get install -y -qq --no-install-recommends $$p || true; }; \
	done
	$(PY) -m pip install -q 'matplotlib>=3.7' >/dev/null
	$(PY) -m bench $(BENCH_ARGS)

# Regenerate every test image from its script (root: the scripts loop-mount images).
images: venv
	for script in tests/images/make_*.py; do $(PY) $$script || exit 1; done

# Where the time goes: make profile TOOL=fs2tar|cpfromfs|cptofs [FS=ext4|btrfs|xfs]
TOOL ?= fs2tar
FS ?= ext4
profile: venv
	$(PY) -m bench.profile --quick --fs $(FS) $(TOOL)

# The fuzz tests for longer than CI runs them (FUZZ_SECONDS per image).
FUZZ_SECONDS ?= 300
fuzz: venv
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_EXAMPLES=1000000 $(PY) -m pytest -q tests/robust/test_fuzz.py

clean:
	rm -rf build kernel/_native .pytest_cache .mypy_cache .ruff_cache
