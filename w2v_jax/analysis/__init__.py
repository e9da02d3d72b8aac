"""The study: k-sweeps, their plots, the PMI shift and gradient bias.

Library code for experiments/ and the notebooks; nothing in a training run imports it.
"""
