# Chorus: `make run` serves the embedded defaults on 127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint format bench soak migrate clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

run: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py seed_demo
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --loop uvloop --http httptools --timeout-graceful-shutdown 10

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Subscribers dropping and resuming while messages and regenerations run through two
# processes: 0 lost, 0 duplicated, memory flat (bench/soak.py). Needs PostgreSQL and Redis.
SOAK_SECONDS ?= 180
SOAK_SUBSCRIBERS ?= 300
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SUBSCRIBERS=$(SOAK_SUBSCRIBERS) $(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) db.sqlite3* test_db.sqlite3* .pytest_cache .ruff_cache
