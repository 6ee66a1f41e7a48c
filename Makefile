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

.PHONY: setup demo train test bench compare clean install uninstall

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

# One worker per core, whole files per worker: a file's module fixtures (a sound server, a
# trained bundle) are built once, and the Keras tests run beside the rest instead of before.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile

bench: $(STAMP)
	$(PY) -m training bench --model $(MODEL)

# Issue 8's comparison tables on the held-out songs: real songs never trained or tuned on
# (the shipped models' validation songs, which only chose when training stopped), then MIDI
# renders with their stems read from the same MIDI files (rendered into MIDI_RENDERS first,
# kept once rendered); look-ahead (what playlist mode and render play), then causal (line-in).
CONV_MODEL ?= models/default-conv
WESNOTH_MUSIC ?= /usr/share/games/wesnoth/1.16/data/core/music
OPENMSX ?= /usr/share/games/openttd/baseset/openmsx
MIDI_RENDERS ?= out/midi
HELDOUT_REAL ?= breaking_the_chains casualties_of_war elf-land revelation the_city_falls \
	transience wanderer
HELDOUT_MIDI ?= coconut_run2 flying_scotsman harp_harmony keep_on_rolling linns_basket \
	midnight_snow_run mighty_giant_run modern_motion moo_redfarn mosey_along_redfarn
COMPARE := $(PY) -m training compare --model $(MODEL) --conv-model $(CONV_MODEL)
REAL_SONGS = $(foreach s,$(HELDOUT_REAL),$(WESNOTH_MUSIC)/$(s).ogg)
MIDI_SONGS = $(foreach s,$(HELDOUT_MIDI),$(MIDI_RENDERS)/$(s).wav)

compare: $(STAMP)
	$(PY) -m training corpus --midi-dir $(OPENMSX) --out $(MIDI_RENDERS) > /dev/null
	$(COMPARE) $(REAL_SONGS)
	$(COMPARE) --stems-dir $(OPENMSX) $(MIDI_SONGS)
	$(COMPARE) --causal $(REAL_SONGS)
	$(COMPARE) --causal --stems-dir $(OPENMSX) $(MIDI_SONGS)

clean:
	rm -rf out .cache

# On the Pi, as root: `sudo make install` / `sudo make uninstall` (see systemd/install.sh).
install:
	bash systemd/install.sh

uninstall:
	bash systemd/uninstall.sh
