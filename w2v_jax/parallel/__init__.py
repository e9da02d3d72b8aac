"""Processes and devices: the mesh, where the train state lives, whether it fits.

Imports only JAX and NumPy (no other w2v_jax package): `step.runners` and the trainer use it.
"""
