"""Background prefetch: an iterable's items produced on a thread, a few ahead.

The host input pipeline is NumPy, which releases the GIL in its array kernels, so making
the next batches overlaps the device step that consumes the current one.
"""

import queue
import threading
from collections.abc import Iterable, Iterator


def _produce(iterator: Iterator, out: queue.Queue, stop: threading.Event) -> None:
    """The prefetch thread: puts (False, item)..., then (True, None) or (True, error)."""

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    try:
        for item in iterator:
            if not put((False, item)):
                return
        put((True, None))
    except BaseException as error:  # handed to the consumer
        put((True, error))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


class _Prefetcher:
    """Iterates over what `_produce` puts in the queue (see `prefetch`)."""

    def __init__(self, iterable: Iterable, size: int):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        self._queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._finished = False
        # The thread holds no reference to self, so a dropped iterator is collected.
        self._thread = threading.Thread(
            target=_produce,
            args=(iter(iterable), self._queue, self._stop),
            name="w2v-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        done, value = self._queue.get()
        if not done:
            return value
        self._finished = True
        self._thread.join()
        if value is not None:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stops the producer thread (after the item it is making) and waits for it."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        self._stop.set()


def prefetch(iterable: Iterable, size: int = 2) -> _Prefetcher:
    """Produces ``iterable``'s items on a background thread, at most ``size`` ahead.

    NumPy releases the GIL in its array kernels, so batch generation overlaps the
    consumer's work. An exception in the producer is raised in the consumer at the point
    it would have occurred. ``close()`` (or leaving a ``with`` block, or dropping the
    iterator) stops the thread and closes the source iterator.
    """
    return _Prefetcher(iterable, size)
