"""The train state is created where it lives, and a state that cannot fit is refused in
one line before anything is allocated."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import pytest

from w2v_jax import trainer
from w2v_jax.configs import tiny
from w2v_jax.parallel import placement
from w2v_jax.step import runners, update

# Eight simulated devices, a 1M-row vocabulary, per-element AdaGrad (four V-row tables):
# every live array of V rows must be a 1/8 shard on each device, none whole anywhere.
_EIGHT_DEVICES = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import functools, jax
    from w2v_jax.step import runners, update
    V, D = 1 << 20, 8
    cfg = update.StepConfig(loss="neg", optimizer="adagrad")
    init = functools.partial(update.init_state, jax.random.PRNGKey(0), V, D, cfg)
    abstract = jax.eval_shape(init)
    options = runners.ParallelOptions("mesh", 0, 8, True, 1)
    runner = runners.make_runner(options, cfg, abstract)
    assert runner.bytes_per_device(abstract) < 4 * V * D * 4 // 8 + 4096
    state = runner.create_state(init)
    tables = [x for x in jax.live_arrays() if x.ndim and x.shape[0] == V]
    assert len(tables) == 4, [x.shape for x in jax.live_arrays()]
    for x in tables:
        shards = x.addressable_shards
        assert len(shards) == 8 and all(s.data.shape[0] == V // 8 for s in shards), x.sharding
    print("ok", len(tables))
    """
)


@pytest.mark.slow
def test_state_is_born_sharded_on_eight_devices():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICES], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", "4"]


def test_bytes_per_device_counts_shards_from_shapes():
    cfg = update.StepConfig(loss="neg", optimizer="rowwise_adagrad")
    abstract = jax.eval_shape(lambda: update.init_state(jax.random.PRNGKey(0), 1000, 10, cfg))
    whole = placement.bytes_per_device(abstract)
    # two [V, D] tables + two row-wise [V] accumulators, the step and the key
    assert whole == 2 * 1000 * 10 * 4 + 2 * 1000 * 4 + 4 + 8
    runner = runners.make_runner(runners.ParallelOptions("single", 0, 1, False, 1), cfg, abstract)
    assert runner.bytes_per_device(abstract) == whole


def test_check_fits_names_the_ways_out():
    placement.check_fits(10, "tiny", ["a"], cap_bytes=100)
    with pytest.raises(ValueError) as err:
        placement.check_fits(3 * 2**30, "dim=300", ["use a", "use b"], cap_bytes=2**30)
    message = str(err.value)
    assert "\n" not in message
    assert "needs 3.00 GiB per device" in message and "1.00 GiB free" in message
    assert message.endswith("use a; or use b")


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_a_state_too_big_for_the_device_stops_before_anything_is_written(tmp_path, optimizer):
    config = tiny.get_config()
    config.optimizer.name = optimizer
    config.dim = 200_000  # 60 words x 2 tables x 0.8 MB, far beyond the 1 MiB granted
    config.input.device_memory_gib = 2**-20
    with pytest.raises(ValueError) as err:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(err.value)
    assert re.match(
        r"the train state \(dim=200000, optimizer \w+, .*\) needs .* per device", message
    )
    assert "parallel.shard_vocab=True" in message and "smaller dim" in message
    assert ("rowwise_adagrad" in message) == (optimizer == "adagrad")
    assert not list((tmp_path / "run").glob("*"))


def test_pmap_places_its_constants_on_the_devices_once():
    """pmap's aux (noise table, Huffman arrays) goes to every device when the run starts,
    as device arrays with a leading device axis, not as host arrays sent every step."""
    from w2v_jax.model import output_layers

    cfg = update.StepConfig(loss="hs", optimizer="sgd")
    abstract = jax.eval_shape(lambda: update.init_state(jax.random.PRNGKey(0), 50, 4, cfg))
    runner = runners.make_runner(runners.ParallelOptions("pmap", 1, 1, False, 1), cfg, abstract)
    counts = list(range(100, 50, -1))
    aux = runner.put_aux(output_layers.constants_for("hs", counts))
    leaves = jax.tree_util.tree_leaves(aux)
    assert leaves and all(isinstance(x, jax.Array) and x.shape[0] == 1 for x in leaves)
    state = runner.create_state(lambda: update.init_state(jax.random.PRNGKey(0), 50, 4, cfg))
    assert state.params["in_embed"].shape == (1, 50, 4)  # one replica per device
