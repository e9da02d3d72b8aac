"""Text to fixed-shape batches: host NumPy (readers, vocabulary, corpora, windows), plus
`on_device`, which reproduces the host pipeline's sampling in JAX for the device.

Imports nothing of the model, the step or the run.
"""
