"""Point groups: sweep points that share every array shape, trained in one vmapped program.

`training.train_group` trains a group through the trainer's loop (each point in its own
run folder, as if alone); `analysis.sweep.run_sweep(..., group_points=True)` plans and
trains a sweep's groups (`training.plan`).
"""
