"""Default config: every field, with gensim / word2vec C names in the comments.

Variants (`synthetic.py`, `text8.py`, ...) call `get_config()` and override a few fields.
Any field can be overridden on the command line, e.g. ``--config.loss.name=nce``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # ---- data ------------------------------------------------------------------------
    config.corpus = ml_collections.ConfigDict()
    # "synthetic" (embedded, no download), "text8", "text8-head", "wiki-60m", "ptb",
    # a path to a text file / directory of text files, or a pre-encoded corpus folder
    # (ids.npy, offsets.npy, vocab.tsv: docs/data.md, "Pre-encoded corpora").
    config.corpus.name = "text8-head"
    config.corpus.data_dir = ""  # "" = $W2V_DATA_DIR, else ~/.cache/w2v_jax
    # where encoded corpora are cached (ids.npy, offsets.npy, vocab.tsv per entry; builds
    # shared between processes through a lock file); "" = ~/.cache/w2v_jax/cache
    config.corpus.cache_dir = ""
    config.corpus.workers = 0  # processes tokenising a directory of text; 0 = min(4, CPUs)
    config.corpus.download = False  # fetch text8.zip when missing (main program only)
    config.corpus.min_count = 5  # min_count: drop words rarer than this
    config.corpus.max_vocab_size = 0  # max_final_vocab-like cap; 0 = no cap
    config.corpus.max_sentence_length = 10_000  # gensim's cut of text8's single line
    # held-out split for evaluation: "heldout" (ptb: valid; else the last 1%), "valid" or
    # "test" (ptb), "" = none
    config.corpus.heldout = "heldout"

    # The synthetic corpus (used when corpus.name == "synthetic").
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.vocab_size = 500  # V of the Markov chain
    config.synthetic.rank = 16  # rank of the log-linear transition model
    config.synthetic.num_tokens = 500_000  # training tokens
    config.synthetic.heldout_tokens = 50_000  # held-out tokens from the same chain
    config.synthetic.sentence_length = 1000  # tokens per sentence
    config.synthetic.zipf_exponent = 1.0  # Zipf-like word frequencies
    config.synthetic.scale = 2.0  # std of the chain's interaction logits (peakedness)
    config.synthetic.seed = 0

    # ---- model -----------------------------------------------------------------------
    # sg=1: "skipgram"; sg=0: "cbow"; "lbl": Mnih & Teh's log-bilinear language model (CBOW
    # with a matrix C_i per context position and per-word output biases, model/word2vec.py)
    config.model = "skipgram"
    config.lbl = ml_collections.ConfigDict()
    config.lbl.context_matrices = "full"  # lbl: C_i [D, D] ("full") or diagonal ("diagonal")
    # lbl: output biases start at "zeros" or at the log unigram probabilities ("unigram")
    config.lbl.bias_init = "zeros"
    config.cbow_mean = True  # cbow_mean: mean (True) or sum of context vectors
    config.cbow_exact_grad = False  # True: true gradient of the mean (word2vec: not)
    config.dim = 100  # vector_size / -size
    config.window = 5  # window: max distance between centre and context
    config.dynamic_window = True  # word2vec's effective window ~ Uniform{1..window}
    config.left_only = False  # contexts = previous `window` words (n-gram LM setup)
    config.sample = 1e-3  # sample: subsampling threshold t (0 = off)

    # ---- output layer ----------------------------------------------------------------
    config.loss = ml_collections.ConfigDict()
    # "softmax", "sampled_softmax", "nce", "neg" (negative sampling), "hs" (hs=1), or
    # "softmax_penalty": the softmax plus penalty · (Z − 1 − log Z), Z exact.
    config.loss.name = "neg"
    config.loss.k = 5  # negative: noise samples per example
    config.loss.ns_exponent = 0.75  # ns_exponent: noise q ∝ count^0.75
    # Who shares one set of k samples: "pair" (word2vec's estimator, independent per
    # example), "row" (one set per centre word), "block" (one per block_size rows:
    # a different, faster estimator whose negative logits become a matmul). Default
    # "row" with skipgram_input "context" (Ji et al. 2016's sharing); configs/word2vec.py
    # has word2vec's estimator, "pair" (with "centre": per pair, the same estimator as
    # word2vec C's "context", and cheaper). The table: docs/training.md, "Negatives".
    config.loss.share = "row"
    config.loss.block_size = 64
    # Skip-gram, sampled losses: whose vector is the input of a pair's example. "centre"
    # (the centre predicts its contexts; one input per row: cheapest) or "context"
    # (word2vec C's loop: each context predicts the centre; shared negatives meet C inputs).
    config.loss.skipgram_input = "context"
    config.loss.chunk_size = 0  # softmax: vocabulary block of the streaming logsumexp; 0 = off
    config.loss.use_bias = False  # output biases (word2vec has none)
    # neg and sampled_softmax: drop a sampled negative equal to the example's label (its
    # target). word2vec C and gensim skip it (`if (target == word) continue;`); TensorFlow's
    # sampled softmax removes these "accidental hits". NCE keeps them whatever this says
    # (its log(k q) correction assumes k draws from q, label included). docs/training.md.
    config.loss.remove_accidental_hits = True
    # softmax_penalty only: the weight α >= 0 of the penalty Z − 1 − log Z. 1.0 is what
    # binary NCE (Z fixed at 1) optimises as k grows; 0 is the plain softmax.
    config.loss.penalty = 1.0

    # ---- optimisation ----------------------------------------------------------------
    config.optimizer = ml_collections.ConfigDict()
    # "sgd" (word2vec), "adagrad" (per element, optax's), "rowwise_adagrad" (one
    # accumulator per row, as FBGEMM / PyTorch-BigGraph), "adam" (dense only). The default
    # is the batch study's winner (experiments/batch_study.py, docs/performance.md "Large-
    # batch training"): sparse per-element AdaGrad, accumulators starting at 1.0, α 0.3,
    # 1,024-row steps. word2vec's 32-row SGD: configs/word2vec.py.
    config.optimizer.name = "adagrad"
    # Update only the rows a batch touches (sgd, both adagrads): each row's duplicate
    # gradients are summed, then applied once (step/optimizers.py). False: optax on dense
    # full-table gradients, one pass over every table per step.
    config.optimizer.sparse = True
    # adagrads: initial sum of squared gradients (1.0, GloVe's: a rarely seen row first
    # moves like SGD at alpha; optax's default is 0.1)
    config.optimizer.initial_accumulator = 1.0
    config.optimizer.eps = 1e-7  # adagrads: eps under the root (per element) or added to it
    # sparse sgd: a word updated n times in one step gets its summed update times n^-power
    # (0: the exact sum, as dense SGD; 1: the mean; see docs/training.md, "duplicate_power")
    config.optimizer.duplicate_power = 0.0
    config.optimizer.alpha = 0.3  # alpha: initial learning rate (word2vec SGD: 0.025)
    config.optimizer.min_alpha = 1e-4  # min_alpha: final learning rate (linear decay)
    config.epochs = 5.0  # epochs / -iter; a fraction (2.5) ends the last pass part way
    # Rows (centre words, or pairs with layout "pairs") per step. Every row of a step is
    # computed from the same parameters, so a frequent word drawn many times in one step
    # gets many stale updates at once: summed SGD diverges past ~128 rows at α 0.025
    # (docs/training.md, "Batching"); AdaGrad sums a row's duplicates and normalises them,
    # and kept word2vec's quality from 1,024 to 16,384 rows. 1,024 is the fastest on a CPU
    # (smaller temporaries); accelerators want more (experiments/bench_accelerator.py).
    config.batch_size = 1024
    # Sequential SGD steps per jitted call (a loop on the device): the host sends one batch
    # of steps_per_call x batch_size rows (or, input.mode device, the call draws them) and
    # step i trains on its i-th slice, seeing the parameters step i-1 wrote; small steps
    # keep word2vec's quality without a Python dispatch or a host batch per step
    # (word2vec.py: 32 steps of 32 rows). 8 steps of the default's 1,024 rows run 1.19x
    # the words/s of one step per call on this CPU, the same vectors (docs/performance.md,
    # "Time to quality against gensim").
    config.steps_per_call = 8
    config.layout = "grouped"  # "grouped" (centre × context slots) or "pairs" (skip-gram)
    config.shuffle_buffer = 0  # rows shuffled within a bounded buffer; 0 = corpus order
    config.seed = 0  # seed: initialisation, subsampling, windows, negatives

    # ---- precision and determinism (docs/training.md, "Precision and determinism") ------
    # Matmul precision of the training step (jax.default_matmul_precision): "float32" (=
    # "highest": float32 on GPUs, 6 bf16 passes on TPU), "tensorfloat32" (= "high": TF32 on
    # Ampere+ GPUs, 3 bf16 passes on TPU) or "bfloat16" (= "default", the backend's own
    # default: TF32 on Ampere+ GPUs, 1 bf16 pass on TPU). No effect on XLA:CPU. Evaluation
    # and the analyses always run at "float32", whatever this says.
    config.matmul_precision = "float32"
    # GPUs: run XLA:GPU's scatter-adds and reductions deterministically
    # (--xla_gpu_deterministic_ops=true, set before JAX starts), so a rerun or a resume is
    # bit-identical there too, at a cost in speed. XLA:CPU is deterministic already.
    config.deterministic = False

    # ---- input -----------------------------------------------------------------------
    config.input = ml_collections.ConfigDict()
    # "host": NumPy batches made on a background thread (any corpus size; shuffle_buffer
    # and prefetch apply). "device": the corpus lives on the device and each jitted call
    # draws its own subsampling, windows and rows (data/on_device.py), so the host sends
    # only learning rates; layout "grouped", parallel.mode "single".
    config.input.mode = "device"
    # The device memory (GiB) to assume free on each device, for the checks that the train
    # state (every mode) and the corpus (device mode) fit before anything is allocated;
    # 0 = ask the device (memory_stats; on CPU, the host's available memory).
    config.input.device_memory_gib = 0.0

    # ---- parallelism -----------------------------------------------------------------
    config.parallel = ml_collections.ConfigDict()
    config.parallel.mode = "single"  # "single" (jit), "pmap", "mesh" (jit + NamedSharding)
    config.parallel.num_devices = 0  # 0 = all local devices
    config.parallel.model_axis = 1  # mesh: devices along the vocabulary axis
    config.parallel.shard_vocab = False  # mesh: shard the tables along V over "model"
    # Several processes (hosts, or one per GPU): mode "mesh", input.mode "host"; every
    # process runs the same command with its own process_id (w2v_jax/parallel/distributed.py,
    # experiments/launch_local.py, README "Multi-host").
    config.parallel.coordinator = ""  # "" = one process; "host:port" of process 0; "auto"
    config.parallel.num_processes = 1
    config.parallel.process_id = 0  # this process, 0 .. num_processes - 1
    config.parallel.local_devices = 0  # CPU only: devices each process simulates; 0 = one
    config.parallel.init_timeout_secs = 120  # wait this long for every process to join

    # ---- bookkeeping -----------------------------------------------------------------
    config.log_every = 5_000  # steps between log lines / metrics.jsonl rows
    # Also write every metrics.jsonl row to TensorBoard event files in <workdir>/tensorboard/
    # (needs `pip install -e .[tensorboard]`; a sweep's points are runs under its folder).
    config.tensorboard = False
    config.eval_every = 0  # steps between evaluations; 0 = only at the end
    config.checkpoint_every = 50_000  # steps between checkpoints (and one at the end)
    # ... and at least every this many seconds (0 = by steps only): an interrupted or
    # crashed run loses at most a few minutes, however long its steps.
    config.checkpoint_every_secs = 300.0
    # Resume a run folder although epochs, optimizer.alpha or optimizer.min_alpha changed
    # (the decay is re-planned, so the rate jumps at the resume point). Other changes to
    # what the checkpoint holds always need a new --workdir (see w2v_jax/resume.py).
    config.resume_override = False
    config.prefetch = 2  # host batches prepared ahead on a background thread
    config.export = True  # write vectors.txt / vectors.bin / vocab.tsv at the end
    # The word vectors a run evaluates and exports: "input" (word2vec's and gensim's) or
    # "input+output", the input plus the output vectors of each word (hs: input only).
    # The sum scores higher on analogy and WS353 and its neighbour lists churn less across
    # seeds (docs/training.md, "Which vectors"); the model and held-out NLL are the same.
    config.vectors = "input+output"
    # glibc: keep memory XLA frees for reuse instead of unmapping it (parallel/host_memory.py):
    # faster steps when per-call temporaries are large (docs/performance.md); RSS stays at
    # its peak.
    config.keep_freed_memory = True
    # Stop with an error when a step's mean loss per example rises this far (nats) above
    # the first step's (0 = only NaN/inf stop): a diverged run can stay finite (an HS run
    # reached 1e26) and must not pass as trained. Relative, because where the loss starts
    # depends on the layer and k (negative sampling: (k + 1) ln 2, 1,387 at k = 2,000).
    config.max_loss = 1000.0
    config.max_steps = 0  # stop after the call that reaches this many steps (0 = all epochs)

    # ---- evaluation ------------------------------------------------------------------
    config.eval = ml_collections.ConfigDict()
    config.eval.analogies = ""  # questions-words.txt ("" = W2V_DATA_DIR's, if English)
    config.eval.similarity = ""  # comma-separated word-pair files
    config.eval.restrict_vocab = 30_000  # analogy cap, as word2vec's compute-accuracy
    config.eval.heldout_batches = 50  # held-out batches for the held-out loss
    return config
