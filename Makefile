# go-trader: `make run` starts everything, `make test` proves it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/default.json
SUPERVISORCTL := $(BIN)/supervisorctl -c supervisord.conf

# Every service reads the config named here; supervisord passes it on.
export GO_TRADER_CONFIG := $(abspath $(CONFIG))

.PHONY: venv browser keys run start stop restart status logs once lint test test-fast bench chaos clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(VENV)/.installed

run/logs:
	mkdir -p run/logs

# The bus key pairs (one per service, plus the read-only `reader` key of the tap and the CLIs)
# in the config's bus.keys_dir (default run/keys), mode 0700; existing keys are kept.
keys: venv
	$(BIN)/python -m services.keys --config $(CONFIG)

run: venv run/logs  ## all services in the foreground; Ctrl-C stops them with state saved
	$(BIN)/python -m config.settings --check $(CONFIG)
	$(BIN)/python -m services.keys --config $(CONFIG)
	$(BIN)/python -m services.supervisor_conf --config $(CONFIG)
	exec $(BIN)/python -m services.forking_supervisord -n -c supervisord.conf

start: venv run/logs  ## all services in the background
	$(BIN)/python -m config.settings --check $(CONFIG)
	$(BIN)/python -m services.keys --config $(CONFIG)
	$(BIN)/python -m services.supervisor_conf --config $(CONFIG)
	$(BIN)/python -m services.forking_supervisord -c supervisord.conf

stop:  ## returns once supervisord, every service and every port are gone
	$(BIN)/python -m services.go_trader stop --config $(CONFIG)

restart:
	$(SUPERVISORCTL) restart all

status:
	$(SUPERVISORCTL) status

logs:
	tail -n 50 -F run/logs/*.log

once: venv run/logs  ## one cycle of every strategy, a summary, then stop with state saved
	$(BIN)/python -m services.once --config $(CONFIG)

# Browser tests drive Debian's chromium; as root (CI) it is installed here, otherwise they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found and not root: browser tests will be skipped"; fi; }

# ruff over the whole tree; mypy strict over the packages pyproject.toml's [tool.mypy] names.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# One pytest worker per core: most of the suite's time is stacks waiting on market time.
test: venv browser lint
	$(BIN)/python -m pytest -n auto

test-fast: venv  ## the edit-test loop: everything not marked slow (no stacks, browsers or long runs)
	$(BIN)/python -m pytest -m "not slow" -x

bench: venv
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(BIN)/python -m bench.run_all

# DISK=1 also kills supervisord, fills the state volume (a tmpfs, as root) and damages files.
chaos: venv
	$(BIN)/python -m tests.support.chaos --seconds $(or $(SECONDS),600) $(if $(DISK),--disk)

clean:
	rm -rf $(VENV) run .pytest_cache
