# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo demo-quick test bench bench-gpu soak fuzz watermark lint data codec model eval clean

install: $(STAMP)

# torch first (the CPU wheel on this disk; a plain `torch` would pull a CUDA build),
# then the project with its dev extra, then encodec without its torchaudio dependency.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps encodec==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/continuo demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest -q -s tests/bench -p no:cacheprovider --override-ini addopts=

# GPU serving (issue 9): the engine on CUDA, presets paper (random weights, built once into
# runs/bench-paper-model/) and realtime, 1/4/16 concurrent jobs; figures into outputs/bench-gpu.md.
# Skipped without CUDA; CONTINUO_BENCH_DEVICE=cpu runs it here at a reduced size (~1-2 min).
bench-gpu: $(STAMP)
	$(PY) -m pytest -q -s tests/bench/test_gpu_bench.py -p no:cacheprovider --override-ini addopts=

# 30 minutes of four random clients against a real server (CONTINUO_SOAK_S=seconds to change);
# writes its figures into docs/reliability.md. The 2-minute variant is in `make test`.
soak: $(STAMP)
	$(PY) -m pytest -q -s tests/soak -p no:cacheprovider --override-ini addopts=

# atheris on the server's request decoder and the bridge's OSC parsing, FUZZ_S seconds each,
# then the hypothesis property tests; writes the counts into docs/reliability.md (fuzz/run.py).
# Corpus in fuzz/corpus/, crashing inputs in fuzz/artifacts/ (both gitignored).
FUZZ_S ?= 120
fuzz: $(STAMP)
	$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q -e '.[fuzz]'
	$(PY) fuzz/run.py --seconds $(FUZZ_S)

lint: $(STAMP)
	$(VENV)/bin/ruff check server bridge tests fuzz

# Rendered piano data and the small codec (long: runs in several sittings, resumes).
data: $(STAMP)
	$(VENV)/bin/continuo data piano data/piano

codec: $(STAMP)
	$(VENV)/bin/continuo train codec data/piano --out runs/codec

# The embedded model from scratch (a few hours on 2 CPU cores; every step resumes, so run it again
# after an interruption): data -> codec -> semantic tokenizer -> semantic, coarse, fine stages ->
# MODEL_OUT. The codec is trained as the shipped one was: EnCodec's loss weights, then one run
# resumed with other flags (it counts steps over all sittings): the L1 waveform loss at weight 1
# (SI-SDR), at 0.3, then at 0.1 with lower rates, the last sitting at 6 kbps only (log-mel);
# exported from its last checkpoint.
# QUICK=1 proves the recipe in minutes: a few pieces, a few steps, tiny stages, into
# outputs/model-quick (then `make demo-quick`).
# On a GPU machine the same recipe trains longer: e.g. `make model STAGE_STEPS_FINE=20000`.
ifeq ($(QUICK),1)
MODEL_WORK ?= outputs/model-quick
MODEL_OUT ?= $(MODEL_WORK)/model
DATA_FLAGS ?= --composers oneills1850 --limit 8 --valid-fraction 0.3 --test-fraction 0.2
CODEC_FLAGS ?= --warmup-steps 10 --eval-every 20 --eval-clips 2 --batch-size 4
CODEC_STEPS ?= 40
CODEC_TUNE_STEPS ?= 60
CODEC_MEL_STEPS ?= 70
CODEC_POLISH_STEPS ?= 80
CODEC_FINAL_STEPS ?= 90
CLUSTERS ?= 32
STAGE_FLAGS ?= --size tiny --window-s 1.2 --batch-size 4 --eval-every 10 --warmup-steps 5
STAGE_STEPS_SEMANTIC ?= 20
STAGE_STEPS_COARSE ?= 20
STAGE_STEPS_FINE ?= 20
else
MODEL_WORK ?= runs/model
MODEL_OUT ?= models/piano
DATA_FLAGS ?= --max-hours 4
CODEC_FLAGS ?=
CODEC_STEPS ?= 7500
CODEC_TUNE_STEPS ?= 31500
CODEC_MEL_STEPS ?= 41400
CODEC_POLISH_STEPS ?= 46300
CODEC_FINAL_STEPS ?= 51500
CLUSTERS ?= 512
STAGE_FLAGS ?= --size small --amp bf16 --lr 1e-3 --warmup-steps 50 --eval-every 100
STAGE_STEPS_SEMANTIC ?= 400
STAGE_STEPS_COARSE ?= 600
STAGE_STEPS_FINE ?= 1000
endif
MODEL_DATA ?= $(MODEL_WORK)/data
# The codec's tune run: started once from the first run's best, then resumed with other flags.
CODEC_TUNE = $(CONTINUO) train codec $(MODEL_DATA) --out $(MODEL_WORK)/codec-tune $(CODEC_FLAGS)
CONTINUO := $(VENV)/bin/continuo

model: $(STAMP)
	$(CONTINUO) data piano $(MODEL_DATA) $(DATA_FLAGS)
	$(CONTINUO) train codec $(MODEL_DATA) --out $(MODEL_WORK)/codec --steps $(CODEC_STEPS) $(CODEC_FLAGS)
	$(CODEC_TUNE) --init-from $(MODEL_WORK)/codec/best --wave-weight 1 --lr 1e-4 --steps $(CODEC_TUNE_STEPS)
	$(CODEC_TUNE) --wave-weight 0.3 --lr 1e-4 --steps $(CODEC_MEL_STEPS)
	$(CODEC_TUNE) --wave-weight 0.1 --lr 5e-5 --steps $(CODEC_POLISH_STEPS)
	$(CODEC_TUNE) --wave-weight 0.1 --lr 2.5e-5 --codebooks 8 --steps $(CODEC_FINAL_STEPS)
	$(CONTINUO) codec export $(MODEL_WORK)/codec-tune/checkpoint $(MODEL_OUT)/codec
	$(CONTINUO) train semantic $(MODEL_DATA) --out $(MODEL_OUT)/semantic --clusters $(CLUSTERS)
	for stage in semantic coarse fine; do \
		steps=$$(case $$stage in semantic) echo $(STAGE_STEPS_SEMANTIC);; \
			coarse) echo $(STAGE_STEPS_COARSE);; fine) echo $(STAGE_STEPS_FINE);; esac); \
		$(CONTINUO) train stage $$stage $(MODEL_DATA) --model-dir $(MODEL_OUT) \
			--out $(MODEL_WORK)/$$stage --steps $$steps $(STAGE_FLAGS) || exit 1; \
		$(CONTINUO) stage export $(MODEL_WORK)/$$stage/best $(MODEL_OUT)/$${stage}_lm || exit 1; \
	done
	test -f $(MODEL_OUT)/clip.flac || cp models/piano/clip.flac models/piano/clip.json $(MODEL_OUT)/
	@echo "model written to $(MODEL_OUT)"

# Continuations of held-out audio scored against baselines (`continuo eval`): 1.5 h of corpus
# pieces the embedded model never saw (rendered once), 32 clips of 4 s prompt + 4 s.
EVAL_DATA ?= data/piano-eval
eval: $(STAMP)
	test -f $(EVAL_DATA)/manifest.json || $(CONTINUO) data piano $(EVAL_DATA) \
		--exclude models/piano/pieces.txt --valid-fraction 0 --test-fraction 1 --max-hours 1.5
	$(CONTINUO) eval $(EVAL_DATA) --clips 32 --out outputs/eval

# The watermark's figures into docs/reliability.md ("## Watermark"): 40 held-out clips of 10 s
# through gain, 44.1 kHz, mixing and Vorbis, false positives, audibility, and 3 continuations of
# the embedded model (server/evaluation/watermark_eval.py; 1 min on 2 idle cores, 7 beside training).
watermark: $(STAMP)
	test -f $(EVAL_DATA)/manifest.json || $(CONTINUO) data piano $(EVAL_DATA) \
		--exclude models/piano/pieces.txt --valid-fraction 0 --test-fraction 1 --max-hours 1.5
	$(PY) -m continuo.server.evaluation.watermark_eval --data $(EVAL_DATA) \
		--report docs/reliability.md

demo-quick: $(STAMP)
	$(CONTINUO) demo --model-dir outputs/model-quick/model --out outputs/demo-quick

clean:
	rm -rf $(VENV) .pytest_cache
