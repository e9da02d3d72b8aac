"""Checkpoints: the format on disk (`store`), saving while training goes on (`writer`),
and when to save (`schedule`). What a checkpoint means and resuming from it are
`w2v_jax.resume`'s."""
