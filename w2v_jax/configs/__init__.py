"""Experiment configs: `default.py` documents every field; variants import and override it."""
