"""Point groups: sweep points that share every array shape, trained in one vmapped program.

`training.train_group` trains a group through the trainer's loop (each point in its own
run folder, as if alone); `sweep.run_sweep` is `analysis.sweep.run_sweep` with the points
that can share a program in groups.
"""
