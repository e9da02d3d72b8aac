"""Measures of trained vectors: analogies, similarity, exact held-out likelihood, fit to truth.

Works on parameters or vector files; never imports the step.
"""
