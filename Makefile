# The two commands: `make run` (the service, with its local stack) and `make test` (the suite).
# Both install what is missing first (scripts/bootstrap), then bring the stack up and migrate.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python

# The test stack lives apart from the dev stack (own state folder and ports): scripts/test-stack.env.
TEST_STACK_ENV := set -a; source scripts/test-stack.env; set +a

.PHONY: run test bootstrap up down status logs reset migrate lint typecheck imports check

run: bootstrap up migrate
	eval "$$(scripts/stack env)"; \
	export DATA_DIR=$${DATA_DIR:-.state/worker-1} WEB_BIND=$${WEB_BIND:-127.0.0.1}; \
	exec $(PY) -m app worker

test: bootstrap check
	$(TEST_STACK_ENV); \
	scripts/stack up; \
	eval "$$(scripts/stack env)"; \
	$(PY) -m app migrate; \
	$(PY) -m pytest $(PYTEST_ARGS)

bootstrap:
	scripts/bootstrap

up:
	scripts/stack up

down:
	scripts/stack down
	$(TEST_STACK_ENV); scripts/stack down

status:
	scripts/stack status

logs:
	scripts/stack logs

reset:
	$(TEST_STACK_ENV); scripts/stack down
	scripts/stack reset

migrate: bootstrap up
	eval "$$(scripts/stack env)"; $(PY) -m app migrate

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: bootstrap
	.venv/bin/mypy

# The rooms of app/ and what each may import: the contracts in pyproject.toml.
imports: bootstrap
	.venv/bin/lint-imports

# Static checks run first in `make test` (and so in CI): warnings and type errors are bugs.
check: lint typecheck imports
