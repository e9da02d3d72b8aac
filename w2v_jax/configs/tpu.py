"""A Colab (or Cloud) TPU: the large-batch default in 16,384-row steps, 32 per jitted call,
on ONE TPU core with the corpus in its memory.

  pip install "jax[tpu]==0.10.2"         # the pinned jax, with its libtpu
  python -m w2v_jax.main --config=w2v_jax/configs/tpu.py --workdir=runs/tpu_text8_head

The notebooks' TPU branch trains this config (notebooks/quickstart.ipynb).

Why one core when a Colab TPU has 8 (v2-8) or 4 chips: on-device input (the host sends
only learning rates, Colab's few host CPUs stay out of the loop) runs one device only
(`parallel.mode="single"`). All cores: ``--config.parallel.mode=mesh
--config.input.mode=host`` (batch_size must divide by the number of cores), the
`shard_map` step whose devices exchange only their summed rows (read from its compiled
program on 8 simulated CPU devices, docs/training.md "What the devices send each other");
its input is then the host's NumPy pipeline, which a 2-vCPU Colab host may not keep up
with at 16,384-row steps. Neither has run on a TPU.

Expected: not yet run on a TPU (none has been lent to this project): no measured figure.
On the 2-core CPU this recipe at 16,384-row steps reached analogy 11.2%, WS353 0.616 on
text8-head (gensim: 8.2%, docs/performance.md). TPU facts that may matter, unmeasured
here: XLA:TPU pads an f32 minor dimension to 128 (dim 100 costs what 128 does); scatters,
which the sparse updates are, can compile to slow loops (openxla#12982).
"""

from w2v_jax.configs import gpu


def get_config():
    # The GPU config's fields, every one (gpu.py comments them): 16,384-row steps, the
    # batch study's largest that kept the default's quality (a TPU core's matrix units want
    # large steps too); 32 steps per call (a TPU call costs more to launch than a GPU
    # kernel, so the host should return rarely: ~0.8M corpus words a call); one core with
    # the corpus in its memory (see the docstring for the mesh); a log row every 1,024 steps.
    # What differs on a TPU, left at the default on purpose:
    # - optimizer.name "adagrad" (per element) doubles the tables' memory: 4·V·D·4 bytes
    #   with both tables, 0.11 GB for text8 (V = 71k, D = 100), but 14.4 GB at V = 3M,
    #   D = 300, more than a Colab core holds (8 GiB on v2, 16 GiB on v5e). There use
    #   `--config.optimizer.name=rowwise_adagrad` (one accumulator per row: 10.0% / 0.604 at
    #   16,384 rows on text8-head); the memory check the trainer runs before allocating the
    #   state says when.
    # - matmul_precision "float32" (6 bf16 passes on a TPU): "tensorfloat32" (3 passes) or
    #   "bfloat16" (1 pass, the TPU's own default) would be faster for the softmax layers,
    #   at a cost in accuracy not measured here. Evaluation is at float32 either way.
    return gpu.get_config()
