"""Processes and devices: joining a multi-process run, the mesh, where the train state
lives, whether it fits, the host's malloc policy.

Imports only JAX, NumPy and `w2v_jax.errors` (no w2v_jax package): `step.runners`,
`settings` and the trainer use it.
"""
