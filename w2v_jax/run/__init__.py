"""One run's folder on disk: who owns it (`claim`). The rest of the folder's files
(`run_folder`, `checkpoint`, `resume`) are to join here (docs/architecture.md); this
package imports `files`, `run_folder` and `checkpoint`, never the trainer.
"""
