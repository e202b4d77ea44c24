# Two set-up commands: `make demo` and `make test`. Everything they need is installed by `make install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= edge,cloud,photo,dev
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
comma := ,

.PHONY: install install-system install-train demo demo-keep test lint bench bench-digits bench-reading bench-agent \
        bench-bridge bench-bridge-cluster bench-photo train clean

install: install-system $(STAMP)

# System packages: Mosquitto (broker for tests and the demo), Chromium (the portal's browser tests, with
# Playwright for Python) and RabbitMQ (the fleet broker's cluster tests, which are skipped without it).
# As root we install them; otherwise we say how.
install-system:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing mosquitto (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "error: mosquitto is missing. Install it with: sudo apt-get install mosquitto" >&2; exit 1; \
	  fi; \
	fi
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (apt-get; the portal's browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "error: chromium is missing (the portal's browser tests). Install it with: sudo apt-get install chromium" >&2; exit 1; \
	  fi; \
	fi
	@if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing rabbitmq-server (apt-get; the fleet broker's cluster tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null \
	      || echo "warning: rabbitmq-server could not be installed; tests/cluster will be skipped" >&2; \
	  else \
	    echo "note: rabbitmq-server is missing, so tests/cluster (the fleet broker) will be skipped. Install it with: sudo apt-get install rabbitmq-server" >&2; \
	  fi; \
	fi
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, this is " + sys.version' 

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

# The tests include a one-epoch training smoke run, so they install TensorFlow too (never the device).
install-train:
	@$(MAKE) --no-print-directory install EXTRAS=edge,cloud,photo,dev,train

demo: install
	$(BIN)/python -m demo.run

# The same, then keeps the residents' portal (and the billing sandbox) up to click through, until Ctrl-C.
demo-keep: install
	$(BIN)/python -m demo.run --keep-portal

test: install-train
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy contract meter_vision edge cloud_bridge training bench demo

train: install-train
	$(BIN)/python -m training.train --out models/

bench: bench-digits bench-reading bench-agent bench-bridge bench-photo

bench-digits: install
	$(BIN)/python -m bench.digits

bench-reading: install
	$(BIN)/python -m bench.reading

bench-agent: install
	$(BIN)/python -m bench.agent

bench-bridge: install
	$(BIN)/python -m bench.bridge

# The fleet broker: a private 3-node RabbitMQ cluster, 1/2/4 AMQP workers into PostgreSQL (needs rabbitmq-server).
bench-bridge-cluster: install
	$(BIN)/python -m bench.bridge --broker rabbitmq --workers 1,2,4

bench-photo: install
	$(BIN)/python -m bench.photo

clean:
	rm -rf demo-out bench-out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
