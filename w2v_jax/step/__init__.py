"""One training step (gather rows, loss, update rows) and how it runs on one or many devices."""
