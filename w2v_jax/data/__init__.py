"""Text to fixed-shape batches on the host, in NumPy: readers, vocabulary, corpora, windows.

Imports nothing of the model, the step or the run.
"""
