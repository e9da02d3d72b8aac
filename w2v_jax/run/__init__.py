"""One run's host side and its folder on disk: the run as it trains (`host`, its metrics
`record`), who owns the folder (`claim`), its metrics as TensorBoard events
(`tensorboard`), a finished run as a Flax module (`trained`). The rest of the folder's files
(`run_folder`, `checkpoint`, `resume`) are to join here (docs/architecture.md); this
package imports the run's modules below the trainer, never the trainer.
"""
