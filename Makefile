# vistok — every target installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_PIN := torch==2.13.0

.PHONY: install test bench bench-quick pretrain pretrain-video study study-photos lint docs clean fashion-mnist

# torch first, pinned: the pin resolves to the local CPU build; an unpinned torch pulls GBs of CUDA wheels.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[dev]"

test: install fashion-mnist
	$(PYTHON) -m pytest -q -n 2 --dist worksteal tests  # two workers (the 2-core machines this is timed on); idle ones take queued tests

bench: install
	$(PIP) install -q -e ".[dev,bench]"
	$(PYTHON) benchmarks/run.py

# every benchmark at its smallest size (a few minutes): CI runs it, so a change that breaks a benchmark fails there
bench-quick: install
	$(PIP) install -q -e ".[dev,bench]"
	$(PYTHON) benchmarks/run.py --smoke

pretrain: install
	$(PYTHON) -m vistok.pretrain

# video prediction on the embedded GIF and panning clips cut from the embedded photos (VIDEOS="a.mp4 b/" adds yours)
pretrain-video: install
	$(PYTHON) -m vistok.pretrain_video $(VIDEOS)

# Fashion-MNIST comes from a Debian package (no download at run time): installed here when missing. Where
# it cannot be installed, the tests that need it are skipped (saying why) and `vistok study` says how.
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) || \
		echo "dataset-fashion-mnist could not be installed (apt-get): its tests are skipped"

study: install fashion-mnist
	$(PYTHON) -m vistok.cli study --grid tokenizations

# the probe beyond Fashion-MNIST: 32x32 tiles of the embedded photos, a class per photo, labelled by folder
study-photos: install
	$(PYTHON) -m vistok.cli study --photos --orders raster,random,randsac:11,5 --parallel none,segments

lint: install
	$(PYTHON) -m ruff check vistok tests benchmarks docs
	$(PYTHON) -c 'from importlinter.cli import lint_imports_command; lint_imports_command()'  # lint-imports, this Python's
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/test_budget.py  # the codec contract's and functions' size budget

docs: install  # docs/commands/*.md: each command's options table, from the CLI
	$(PYTHON) docs/options.py

clean:
	rm -rf shards runs bench-out .pytest_cache
