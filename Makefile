# Tern: every set-up step a newcomer needs, from a fresh Debian 12 machine.
#   make demo   the main job (server + emulated device + an update, once built)
#   make test   unit and integration tests, installing what they need

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the tools and tests need (host side).
DEBIAN_PACKAGES := python3 python3-venv python3-pip git make time \
	mender-artifact mender-client postgresql nginx-light wrk \
	qemu-system-arm qemu-utils u-boot-qemu u-boot-tools libubootenv-tool mmdebstrap \
	e2fsprogs dosfstools mtools fdisk kmod cpio gzip busybox-static openssl openssh-client \
	xdelta3 zstd \
	debhelper dh-python lintian systemd udev \
	chromium chromium-driver

.PHONY: deps venv test test-unit test-integration lint demo demo-artifact bench deb deb-next image image-systemd delta-images qemu-shell clean

## deps: install the Debian packages (idempotent: apt runs only when one is missing; the
## downloaded .deb files, 2.4 GB, are not kept: a CI machine's disk can be small)
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing && \
		$(SUDO) apt-get clean; \
	fi

## venv: a virtual environment with Tern and its test tools, editable, at the versions
## pinned in constraints.txt
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

test: deps venv image image-systemd
	$(PY) -m pytest -n 2 --durations=40 tests/unit tests/integration

test-unit: venv
	$(PY) -m pytest tests/unit

test-integration: deps venv image image-systemd
	$(PY) -m pytest tests/integration

lint: deps venv
	$(VENV)/bin/ruff check .

## demo: tern-server + one emulated device + an OTA update to release-2 (a few minutes)
demo: deps venv image
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/demo.py

## demo-artifact: tern-artifact and Debian's mender-artifact read each other's artifacts
demo-artifact: deps venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo-artifact.sh

## bench: every benchmark, each beside its baseline (over an hour: 1,000,000 devices are
## seeded and 10,000 simulated devices updated; see BENCHMARKS.md for each one's command)
bench: deps venv image
	$(PY) -m bench.artifact
	$(SUDO) $(PY) -m bench.install
	$(PY) -m bench.server
	$(PY) -m bench.slow_clients
	$(PY) -m bench.polls
	$(PY) -m bench.download
	$(PY) -m bench.resume
	$(PY) -m bench.boot
	$(PY) -m bench.fleet
	$(PY) -m bench.scale_out
	$(PY) -m bench.ota
	$(PY) -m bench.agent

## fleet-power-cuts: 300 simulated devices, 20 % of them cut once at a random point of the
## update; every cut device outside its trial boot must end in success (RELIABILITY.md)
.PHONY: fleet-power-cuts
fleet-power-cuts: venv
	$(PY) -m bench.fleet --devices 300 --power-cut-rate 0.2 --poll-interval 5 --seed 1

## scale-out: a phased deployment to 10,000 simulated devices through nginx in front of two
## instances on one PostgreSQL and S3 (moto), one instance SIGKILLed midway (BENCHMARKS.md)
.PHONY: scale-out
scale-out: venv
	$(PY) -m bench.scale_out --devices 10000 --seed 1

## campaign: power cuts during OTA updates on PARALLEL devices at once (make campaign N=200
## PARALLEL=2: about a minute a cut on each device); RELIABILITY.md. DELTA=1: every release
## block-indexed (make delta-images), each install checked to go adaptive; its own section
.PHONY: campaign
campaign: deps venv image $(if $(DELTA),delta-images)
	$(PY) -m testkit.campaign --cuts $(or $(N),200) --parallel $(or $(PARALLEL),2) \
	    $(if $(DELTA),--delta)

## replay: every flush point of three whole updates (install, rollback, daemon) rebuilt,
## booted and checked (hours: one boot per distinct crash state); RELIABILITY.md. Resumable:
## build/replay keeps the recordings and the results, a run boots only what is left, on
## PARALLEL devices (2), starting none after MINUTES; FRESH=1 records again (new images);
## SCENARIOS="..." others (SCENARIOS=delta: an adaptive install, after make delta-images)
.PHONY: replay replay-report
replay: deps venv image $(if $(filter delta,$(SCENARIOS)),delta-images)
	$(PY) -m testkit.replay --workdir build/replay --parallel $(or $(PARALLEL),2) \
		$(if $(SCENARIOS),--scenarios $(SCENARIOS)) \
		$(if $(MINUTES),--minutes $(MINUTES)) $(if $(FRESH),--fresh-recording)

## replay-report: where `make replay` stands (booted, failures, still to boot per scenario)
replay-report: venv
	$(PY) -m testkit.replay --workdir build/replay --report \
		$(if $(SCENARIOS),--scenarios $(SCENARIOS))

## deb: the device agent as a Debian package, build/deb/tern-updater_<version>_all.deb,
## built from a copy of its sources by dpkg-buildpackage (the .deb lands beside that copy);
## rebuilt when a source changed
DEB_SOURCES := $(shell find debian updater artifact -type f -not -name '*.pyc') docs/porting.md
deb: deps build/deb/built
build/deb/built: $(DEB_SOURCES)
	rm -rf build/deb/src build/deb/tern-updater_* $@
	mkdir -p build/deb/src/docs
	cp -r debian updater artifact build/deb/src/
	cp docs/porting.md build/deb/src/docs/
	cd build/deb/src && dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info build/deb/tern-updater_*_all.deb
	touch $@

## deb-next: the same sources as the next version, build/deb-next/tern-updater_<next>_all.deb:
## the agent an image's OTA updates the agent to (images/build.py, release-next-agent)
NEXT_AGENT_VERSION := 0.1.0+next1
deb-next: deps build/deb-next/built
build/deb-next/built: $(DEB_SOURCES)
	rm -rf build/deb-next
	mkdir -p build/deb-next/src/docs
	cp -r debian updater artifact build/deb-next/src/
	cp docs/porting.md build/deb-next/src/docs/
	{ printf 'tern-updater ($(NEXT_AGENT_VERSION)) unstable; urgency=medium\n\n'; \
	  printf '  * The same sources as the next version (tests: the agent updated by an OTA).\n\n'; \
	  printf ' -- %s  %s\n\n' "$$(dpkg-parsechangelog -SMaintainer)" \
	      "$$(date -R -u -d "$$(dpkg-parsechangelog -SDate) + 1 minute")"; cat debian/changelog; \
	} > build/deb-next/src/debian/changelog
	cd build/deb-next/src && dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info build/deb-next/tern-updater_*_all.deb
	touch $@

## image: the emulated device's disk and release images in build/images (cached); the
## agent comes from the package that `make deb` builds
image: deps venv deb deb-next
	$(PY) images/build.py

## delta-images: release-1's delta pairs beside the images (one package newer, one
## configuration file changed), as block-indexed artifacts (images/build.py --delta); `bench.delta`
delta-images: image
	$(PY) images/build.py --delta

## image-systemd: the systemd flavour of the device image in build/images-systemd (cached
## like `image`): systemd as PID 1, the agent run by its units
image-systemd: deps venv deb deb-next
	$(PY) images/build.py --flavour systemd

## qemu-shell: boot a disposable device from the image, its console here (Ctrl-] quits)
qemu-shell: image
	$(VENV)/bin/tern-qemu run build/images/disk.img

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache
