# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config/proxy.toml

.PHONY: install run test unit bench soak check sysdeps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)                ## the venv with the project and its test dependencies

run: install                     ## run the proxy with the shipped config
	$(PY) -m prefork_proxy -c $(CONFIG)

check: install                   ## validate the config, like nginx -t
	$(PY) -m prefork_proxy -c $(CONFIG) --check

sysdeps:                         ## system packages the tests need (redis-server, curl, chromium)
	@bash tools/sysdeps.sh test

test: install sysdeps            ## the whole suite
	$(PY) -m pytest -q

unit: install                    ## the fast sans-IO tests only
	$(PY) -m pytest -q tests/unit

bench: install                   ## side by side with nginx (and Squid/Varnish when installed)
	@bash tools/sysdeps.sh bench
	$(PY) -m bench

soak: install                    ## 10 minutes of mixed load; workers' RSS and fds over time (not in CI)
	@bash tools/sysdeps.sh bench
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info test-output bench/results
