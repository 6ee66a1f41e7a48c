# Every target bootstraps what it needs: a fresh clone only needs python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL ?= models/default
# Without MUSIC_DIR the demo-corpus model goes to models/demo, never over the shipped default.
NAME ?= $(if $(MUSIC_DIR),default,demo)
MUSIC_DIR ?=
DEMO_DIR := out/demo

.PHONY: setup demo train test bench clean install uninstall

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pi,train,dev,sacn,web,fseq]'
	touch $(STAMP)

# A light show in the terminal on the shipped model, from a generated demo song.
demo: $(STAMP)
	$(PY) -m training corpus --out $(DEMO_DIR) --songs 1 --seconds 30 --seed 7
	$(PY) -m pi run --source file --realtime --output terminal --model $(MODEL) $(DEMO_DIR)
	$(PY) -m pi preview $(DEMO_DIR)/song_00_fade.wav --model $(MODEL) --out $(DEMO_DIR)/preview.html

# Without MUSIC_DIR the generated demo corpus is the training data.
train: $(STAMP)
	$(PY) -m training train --name $(NAME) $(if $(MUSIC_DIR),--music-dir "$(MUSIC_DIR)")

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m training bench --model $(MODEL)

clean:
	rm -rf out .cache

# On the Pi, as root: `sudo make install` / `sudo make uninstall` (see systemd/install.sh).
install:
	bash systemd/install.sh

uninstall:
	bash systemd/uninstall.sh
