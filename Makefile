# Two commands on a fresh machine: `make demo` and `make test` (`make test-fast` skips the
# slow tests). Each sets up .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so that pip takes the wheel this machine caches.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
SHARED_MEDMNIST := $(abspath ../shared/data/medmnist)
export MEDMNIST_ROOT ?= $(if $(wildcard $(SHARED_MEDMNIST)/*.npz),$(SHARED_MEDMNIST),)

.PHONY: venv demo test test-fast lint format docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,medmnist,dicom,dask,plot,parquet,deploy]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m sklearn_cae demo

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Everything: the tests, the package's docstring examples, the slow smoke runs (CI).
test: lint
	$(PY) -m pytest

# The same without the tests marked slow (benchmark and fine-tuning smoke runs, ...).
test-fast: lint
	$(PY) -m pytest -m "not slow"

docs: venv
	$(PY) -m pip install -q -e '.[docs]'
	$(MAKE) -C docs html

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
