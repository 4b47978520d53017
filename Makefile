# Two commands for a fresh machine:
#   make run    Sanad on the embedded default (SQLite, no Redis, demo platform, web chat)
#   make test   the whole test suite (lint, types, unit, integration, browser and end-to-end)
#   make test-fast   the tests that need no PostgreSQL, Redis or Rasa (under a minute)
.PHONY: run test test-fast install train lint bench nlu-check

install:
	./scripts/bootstrap.sh

run: install
	.venv/bin/sanad run

train: install
	.venv/bin/sanad train

lint:
	.venv/bin/ruff check bot flows integrations tests bench
	.venv/bin/mypy

# the fast tier: no PostgreSQL, Redis or Rasa server needed (SQLite and local doubles only)
test-fast:
	.venv/bin/pytest -q -p no:cacheprovider -m "not services and not e2e and not browser" tests

# the Rasa project: data validation, the test stories, and the held-out NLU report with its floors
nlu-check:
	cd nlu && ../.venv-rasa/bin/rasa data validate --fail-on-warnings
	cd nlu && ../.venv-rasa/bin/rasa test core --stories tests/test_stories.yml --fail-on-prediction-errors \
		--model "$$(../.venv/bin/python -c 'from bot.runtime.rasa import model_path; print(model_path())')" --out results/core
	.venv-rasa/bin/python nlu/report.py --sets nlu,crisis --check-floors \
		--model "$$(.venv/bin/python -c 'from bot.runtime.rasa import model_path; print(model_path())')"

test:
	./scripts/bootstrap.sh --browser
	.venv/bin/sanad train
	$(MAKE) lint
	$(MAKE) nlu-check
	.venv/bin/pytest -q -p no:cacheprovider tests
