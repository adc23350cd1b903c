"""Training batches made in worker processes, for an accelerator (issue #15).

Threads made the batches until now. Each crop holds Python's GIL for part of its work, so
the threads compete for it with each other and with the training loop's own Python: on the
16-core host of an H200 they made only 2.1x what one thread makes, and fed the GPU 0.8x of
what it could take (docs/benchmarks.md). Here each worker is a process of its own:

- the decoded photos and masks are put once into one block of shared memory, which every
  worker reads in place (no copy per worker, nothing pickled per batch);
- a worker writes each batch into a slot of a second shared block (the masks as uint8), and
  says which;
- a thread of the training process copies each batch out of its slot as it comes (the masks
  to float32), so the slot is free again and the training loop only takes a made batch.

Batch ``i`` of epoch ``e`` is :meth:`unet.data.PairBatcher.batch` of the same batcher, so the
batches are exactly those the threads make (a test compares them). Workers are started
with ``spawn`` (safe beside TensorFlow's and JAX's threads) and end when told or when their
parent dies (they ignore Ctrl-C and SIGTERM: the training process stops them when it has
finished its batch and written its checkpoint).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import queue
import shutil
import threading
import time
from multiprocessing import shared_memory

import numpy as np

from .data import PairBatcher


class SharedMemoryTooSmall(RuntimeError):
    """The machine's shared memory cannot hold the photos and the batch slots."""


def shared_memory_free() -> int | None:
    """Bytes free for shared memory (``/dev/shm``, Linux); None where it cannot be told."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def _layout(pairs) -> tuple[list[tuple], int]:
    """Where each photo and mask lies in the pairs' block: (offset, shape, dtype) twice per pair."""
    at, places = 0, []
    for image, mask in pairs:
        place = []
        for arr in (image, mask):
            place.append((at, arr.shape, arr.dtype.str))
            at += -(-arr.nbytes // 64) * 64  # each array aligned to 64 bytes
        places.append(tuple(place))
    return places, max(at, 1)


def _arrays(buf, places) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (photo, mask) pairs as arrays over the pairs' block, laid out by :func:`_layout`."""
    return [tuple(np.ndarray(shape, np.dtype(dt), buf, off) for off, shape, dt in place) for place in places]


def _worker(spec: dict, tasks, done, parent: int) -> None:
    """A worker process: batch (epoch, index) into slot ``slot`` until told to stop.

    It ignores SIGINT and SIGTERM: Ctrl-C in a terminal reaches the whole process group, and
    the training process handles a stop itself (it finishes the batch, writes its checkpoint,
    then ends its workers), which needs the workers until then."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Attached, not created: a spawned worker shares its parent's resource tracker, and the
    # parent's unlink is the one that frees the blocks.
    pairs_block = shared_memory.SharedMemory(name=spec["pairs"])
    out_block = shared_memory.SharedMemory(name=spec["out"])
    pairs = _arrays(pairs_block.buf, spec["places"])
    batcher = PairBatcher(pairs, spec["size"], spec["batch_size"], spec["augment"], steps=spec["steps"],
                          seed=spec["seed"], shard=spec["shard"])
    xs = np.ndarray(spec["x_shape"], np.uint8, out_block.buf, 0)
    ys = np.ndarray(spec["y_shape"], np.uint8, out_block.buf, xs.nbytes)
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the training process is gone
                    return
                continue
            if task is None:
                return
            epoch, index, slot = task
            try:
                x, y = batcher.batch(index, epoch)
                xs[slot], ys[slot] = x, y
                done.put((epoch, index, slot, None))
            except Exception as exc:  # reported with the batch it was making
                done.put((epoch, index, slot, f"{type(exc).__name__}: {exc}"))
    finally:
        del xs, ys, pairs, batcher
        pairs_block.close()
        out_block.close()


class ProcessBatches:
    """A :class:`~unet.data.PairBatcher`'s batches, made ahead by ``workers`` processes.

    :meth:`batch` (epoch, index) returns what ``batcher.batch(index, epoch)`` returns. The
    batches after the one asked for (in order, across the epoch's end) are made ahead, up to
    ``ahead`` of them; a batch asked for out of that order starts the order again from it.
    Call :meth:`close` (or use it as a context manager) to end the workers and free the
    shared memory.
    """

    def __init__(self, batcher: PairBatcher, workers: int, ahead: int | None = None):
        if batcher.augment is None:
            raise ValueError("worker processes make training batches (random crops); validation tiles need none")
        self.batcher, self.workers = batcher, int(workers)
        self.ahead = int(ahead or self.workers + 4)  # a slot per worker at work, and a few made ahead
        b, s = batcher.batch_size, batcher.size
        self._blocks: list[shared_memory.SharedMemory] = []
        self._procs: list = []
        # A process ending without close() (sys.exit from a SIGTERM handler mid-epoch, an
        # exception past every `with`) would hang at exit: multiprocessing's own exit handler
        # joins the workers, which ignore SIGTERM. This runs before it (atexit is last-in, first-out).
        atexit.register(self.close)
        places, nbytes = _layout(batcher.pairs)
        x_shape, y_shape = (self.ahead, b, s, s, 3), (self.ahead, b, s, s, 1)
        xs_bytes = int(np.prod(x_shape))
        out_bytes = xs_bytes + int(np.prod(y_shape))  # masks are 0 or 1: uint8 in the slots
        free = shared_memory_free()
        if free is not None and nbytes + out_bytes > 0.9 * free:
            # Writing past a full /dev/shm kills the process with SIGBUS, not an error: refuse first.
            raise SharedMemoryTooSmall(
                f"the batch worker processes need {(nbytes + out_bytes) / 2**20:.0f} MiB of shared memory and "
                f"/dev/shm has {free / 2**20:.0f} MiB free (a container's default is 64 MiB: give it more "
                "with --shm-size)")
        try:
            pairs_block = self._block(nbytes)
            for pair, shared in zip(batcher.pairs, _arrays(pairs_block.buf, places)):
                shared[0][...], shared[1][...] = pair
            del pair, shared  # no view of the block outlives the copy (close() would find it)
            out_block = self._block(out_bytes)
            self._xs = np.ndarray(x_shape, np.uint8, out_block.buf, 0)
            self._ys = np.ndarray(y_shape, np.uint8, out_block.buf, xs_bytes)
            spec = dict(pairs=pairs_block.name, out=out_block.name, places=places, size=s, batch_size=b,
                        augment=batcher.augment, steps=batcher.steps, seed=batcher.seed, shard=batcher.shard,
                        x_shape=x_shape, y_shape=y_shape)
            ctx = multiprocessing.get_context("spawn")
            self._tasks, self._done = ctx.Queue(), ctx.Queue()
            for _ in range(self.workers):
                p = ctx.Process(target=_worker, args=(spec, self._tasks, self._done, os.getpid()), daemon=True,
                                name="unet-batches")
                p.start()
                self._procs.append(p)
        except BaseException:
            self.close()
            raise
        # State shared with the receiving thread, under self._cond:
        self._free = list(range(self.ahead))
        self._pending: dict[tuple[int, int], int] = {}  # asked of a worker: key -> slot
        self._made: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # copied out, not yet taken
        self._discard: set[int] = set()  # slots whose batch is no longer wanted when it comes
        self._next: tuple[int, int] | None = None  # the next batch to make ahead
        self._failure: str | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._receiver = threading.Thread(target=self._receive, name="unet-batches-receive", daemon=True)
        self._receiver.start()

    def _block(self, nbytes: int) -> shared_memory.SharedMemory:
        block = shared_memory.SharedMemory(create=True, size=nbytes)
        self._blocks.append(block)
        return block

    def _after(self, key: tuple[int, int]) -> tuple[int, int]:
        epoch, index = key
        return (epoch, index + 1) if index + 1 < len(self.batcher) else (epoch + 1, 0)

    def _submit(self) -> None:
        """Ask the workers for the next batches in order, while a slot is free and fewer than
        ``ahead`` batches are asked for or made and not yet taken (under the lock)."""
        while self._free and self._next is not None and len(self._pending) + len(self._made) < self.ahead:
            key, slot = self._next, self._free.pop()
            self._pending[key] = slot
            self._tasks.put((key[0], key[1], slot))
            self._next = self._after(key)

    def _dead_workers(self) -> str | None:
        """A worker ends only when told to: one that has ended may have taken a batch that will
        never come, or the queue's lock with it."""
        dead = [p.exitcode for p in self._procs if not p.is_alive()]
        if not dead:
            return None
        return (f"{len(dead)} of {len(self._procs)} batch worker processes ended unexpectedly "
                f"(exit codes {sorted(set(dead))}; -9 is a kill, often for memory)")

    def _receive(self) -> None:
        """The receiving thread: copies each finished batch out of its slot as it comes (numpy
        copies without the GIL), frees the slot and asks for the next batch, so the training
        loop only takes a made batch. A failure is kept for :meth:`batch` to raise."""
        checked = time.monotonic()
        while not self._closing:
            try:
                epoch, index, slot, error = self._done.get(timeout=0.5)
            except queue.Empty:
                epoch = None
            if time.monotonic() - checked > 0.5 or epoch is None:
                checked, failure = time.monotonic(), self._dead_workers()
                if failure:
                    with self._cond:
                        self._failure = self._failure or failure
                        self._cond.notify_all()
            if epoch is None:
                continue
            key = (epoch, index)
            made = None
            if error is None and slot not in self._discard:
                made = self._xs[slot].copy(), self._ys[slot].astype(np.float32)
            with self._cond:
                if slot in self._discard:  # dropped while it was made (or copied)
                    self._discard.discard(slot)
                elif error is not None:
                    self._failure = self._failure or f"making training batch {index} of epoch {epoch} failed: {error}"
                else:
                    if self._pending.get(key) == slot:
                        del self._pending[key]
                    self._made[key] = made
                self._free.append(slot)
                self._submit()
                self._cond.notify_all()

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``. Raises RuntimeError once a worker has ended (found here,
        not only by the receiving thread's twice-a-second check: the others may have made every
        batch asked for by then, and the run would go on with a worker fewer, or not, by chance)."""
        key = (epoch, index)
        with self._cond:
            failure = self._failure or self._dead_workers()
            if failure:
                raise RuntimeError(failure)
            if key not in self._pending and key not in self._made:
                # Out of the order made ahead (the first call, a resumed epoch, a peek at a batch):
                # the batches go on from this one, and those made ahead of another are dropped.
                self._made.clear()
                for k in list(self._pending):
                    self._discard.add(self._pending.pop(k))
                self._next = key
                self._submit()
            while key not in self._made:
                if self._failure:
                    raise RuntimeError(self._failure)
                self._cond.wait(timeout=1.0)
            made = self._made.pop(key)
            self._submit()
            return made

    def close(self) -> None:
        """End the workers and free the shared memory (safe to call twice)."""
        atexit.unregister(self.close)
        self._closing = True
        receiver = getattr(self, "_receiver", None)
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(5.0)
        procs, self._procs = self._procs, []
        for _ in procs:
            try:
                self._tasks.put(None)
            except Exception:
                pass
        deadline = time.monotonic() + 5.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()  # it ignores SIGTERM
                p.join(1.0)
        self._xs = self._ys = None
        blocks, self._blocks = self._blocks, []
        for block in blocks:
            try:
                block.close()
            except BufferError:  # a view still alive somewhere: unlinking still frees the name
                pass
            try:
                block.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "ProcessBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
