# worldfleet: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: install browser test test-unit lint demo bench stack-up stack-down clean

PLOTLY_JS := dashboard/assets/plotly-cartesian.min.js

install: $(STAMP) browser $(PLOTLY_JS)

# The dashboard's Plotly.js partial bundle (dashboard/plotly_bundle.py says why), pinned and checked.
$(PLOTLY_JS): $(STAMP) dashboard/plotly_bundle.py
	$(PY) -m dashboard.plotly_bundle

# Headless Chromium and its driver, from Debian, for the dashboard's tests and benchmark. apt waits
# for a lock another apt holds (an unattended upgrade, a second install) instead of failing at once.
APT := apt-get -q -o DPkg::Lock::Timeout=600
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO $(APT) update && $$SUDO $(APT) install -y chromium chromium-driver; }

# torch first (the CPU build; any other spec pulls GBs of CUDA wheels), then DeepSpeed built
# against it, then the project with its pinned dependencies.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "setuptools>=68" wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation deepspeed==0.19.8
	# DeepSpeed compiles its CPU shared-memory collective on first use (41 s here): at install, not
	# inside the first fine-tune of `fleet demo`. The build is cached in ~/.cache/torch_extensions.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	$(PIP) install -q --no-build-isolation -e ".[test]"
	# The Compose specification's JSON Schema, to check infra/production without a Docker engine.
	$(PIP) download -q --no-deps -d $(VENV)/compose-spec docker-compose==1.29.2
	touch $(STAMP)

test: lint
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-unit: install
	$(VENV)/bin/pytest tests/unit

demo: install
	$(VENV)/bin/fleet demo --profile quick --out out/demo.json

bench: install
	$(VENV)/bin/fleet bench ingest --episodes 1000 --out out/bench_ingest.json

stack-up: install
	$(VENV)/bin/fleet stack up

stack-down: install
	$(VENV)/bin/fleet stack down

clean:
	-$(VENV)/bin/fleet stack down
	rm -rf $(VENV) .fleet out $(PLOTLY_JS)
