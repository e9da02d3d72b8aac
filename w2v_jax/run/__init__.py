"""One run's folder on disk: who owns it (`claim`), its metrics as TensorBoard events
(`tensorboard`), a finished run as a Flax module (`trained`). The rest of the folder's files
(`run_folder`, `checkpoint`, `resume`) are to join here (docs/architecture.md); this
package imports the run's modules below the trainer, never the trainer.
"""
