"""Continuous batching for `serve`: concurrent requests decoded together, one thread owning the model.

`Scheduler` runs one background thread. Callers `submit` `Reply` objects (one per answer: a request
with `n: 2` submits two) with a callback that receives each answer's text chunks as soon as they
are final, then `None` at the end (or the exception that stopped it). Between decode steps the
thread admits waiting answers into a `DecodeBatch` (`core.generation.batch`, the decoder `predict`
uses) up to `max_batch_size` rows, prefills the newcomers, samples every row with its own
`Sampler` and `Stopper`, and removes rows that finished or whose client went away (`cancel()`).

- A greedy answer is the answer the same request gets alone: rows are left-padded and masked with
  their own position ids, and each row's sampling depends only on its own logits and seed.
- Answers the batched decoder cannot take run *exclusively*, one at a time, stepped between batch
  steps through `Reply`'s own iterator: classifier-free guidance, speculative decoding, models
  without a batched forward (llama.cpp, vLLM: their serving stays serial) and `ntk auto` (its
  rotary scale depends on the row's own length).
- The queue is bounded: `submit` raises `QueueFull` when `max_queue` answers already wait (a request
  always fits an empty queue), so the HTTP layer answers 429 instead of growing without limit.
- `call(fn, ...)` runs other model work (embeddings) on the same thread, between steps.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from zhllama.core.generation.batch import DecodeBatch, Row, can_batch
from zhllama.core.generation.sampling import Sampler

Emit = Callable[[int, Any], None]  # (answer index, text chunk | None at the end | the exception)


class QueueFull(Exception):
    """`max_queue` answers are already waiting."""


@dataclass(eq=False)
class Ticket:
    """One submitted answer: the `Reply` it fills, its index in the request, where chunks go."""

    reply: Any
    index: int
    emit: Emit
    shown: int = 0
    source: Any = None  # the running iterator of an exclusive answer
    row: Row | None = None
    ended: bool = False


@dataclass
class SchedulerStats:
    admitted: int = 0
    rejected: int = 0
    peak_batch: int = 0
    steps: int = 0
    rows_stepped: int = 0  # sum over steps of the rows decoded: rows_stepped / steps is the mean batch


class Scheduler:
    def __init__(self, model, max_batch_size: int = 8, max_queue: int = 64):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batchable = can_batch(model) and getattr(model, "auto_ntk", None) is None
        self.batch = DecodeBatch(model) if self.batchable else None
        self.waiting: deque[Ticket] = deque()
        self.calls: deque[tuple[Future, Callable, tuple]] = deque()
        self.exclusive: Ticket | None = None
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="zhllama-scheduler", daemon=True)
        self._thread.start()

    # ---- callers' side (any thread) --------------------------------------------------------
    def submit(self, replies: Sequence, emit: Emit) -> list[Ticket]:
        """Queue `replies` (all or none); raises `QueueFull` when the queue has no room for them."""
        tickets = [Ticket(reply, i, emit) for i, reply in enumerate(replies)]
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if self.waiting and len(self.waiting) + len(tickets) > self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self.waiting)} answers are waiting (--max-queue {self.max_queue})")
            self.waiting.extend(tickets)
            self._cond.notify()
        return tickets

    def call(self, fn: Callable, *args) -> Future:
        """Run `fn(*args)` on the model's thread between decode steps; returns its future."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self.calls.append((future, fn, args))
            self._cond.notify()
        return future

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread; answers still queued or running end with a cancellation."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- the model's thread ----------------------------------------------------------------
    def _busy(self) -> bool:
        return bool(self.waiting or self.calls or self.exclusive or (self.batch is not None and self.batch.rows))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._busy():
                    self._cond.wait()
                if self._closed:
                    pending = list(self.waiting)
                    self.waiting.clear()
                    calls = list(self.calls)
                    self.calls.clear()
                    break
                calls = list(self.calls)
                self.calls.clear()
                joining = self._admit()
            for future, fn, args in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        future.set_exception(exc)
            try:
                self._step(joining)
            except Exception as exc:  # noqa: BLE001 - the model's thread must not die: fail what ran
                self._fail_all(exc)
        for future, _fn, _args in calls:
            future.cancel()
        running = list(pending)
        if self.batch is not None:
            running += [row.owner for row in self.batch.rows]
        if self.exclusive is not None:
            running.append(self.exclusive)
        for ticket in running:
            ticket.reply.cancel()
            self._end(ticket, None)

    def _admit(self) -> list[Ticket]:
        """Move waiting answers into free slots (called with the lock held)."""
        joining = []
        used = (len(self.batch.rows) if self.batch is not None else 0) + (self.exclusive is not None)
        kept: deque[Ticket] = deque()
        while self.waiting:
            ticket = self.waiting.popleft()
            if ticket.reply.cancelled:
                self._end(ticket, None)
                continue
            if used >= self.max_batch_size:
                kept.append(ticket)
                continue
            if self._batchable(ticket.reply):
                joining.append(ticket)
            elif self.exclusive is None:
                self.exclusive = ticket
            else:
                kept.append(ticket)  # one exclusive answer at a time; batchable ones may pass it
                continue
            used += 1
            self.stats.admitted += 1
        self.waiting = kept
        return joining

    def _fail_all(self, exc: BaseException) -> None:
        tickets = [row.owner for row in self.batch.rows] if self.batch is not None else []
        if self.batch is not None:
            self.batch = DecodeBatch(self.model)
        if self.exclusive is not None:
            tickets.append(self.exclusive)
            self.exclusive = None
        for ticket in tickets:
            self._end(ticket, exc)

    def _batchable(self, reply) -> bool:
        return self.batchable and reply.decoder is None and reply.guidance is None

    def _step(self, joining: list[Ticket]) -> None:
        batch = self.batch
        if joining:
            rows = []
            for ticket in joining:
                reply = ticket.reply
                try:
                    ticket.row = Row(list(reply.prompt_ids), Sampler(reply.params), reply.stopper, ticket)
                except Exception as exc:  # noqa: BLE001 - e.g. settings the sampler refuses
                    self._end(ticket, exc)
                    continue
                reply.token_ids = ticket.row.generated  # the reply reports what the row generates
                rows.append(ticket.row)
            try:
                batch.add(rows)
            except Exception as exc:  # noqa: BLE001 - the newcomers fail, the running rows go on
                for row in rows:
                    self._end(row.owner, exc)
        if batch is not None and batch.rows:
            try:
                self._decode(batch)
            except Exception as exc:  # noqa: BLE001 - a failed step fails every row in it
                failed = [row.owner for row in batch.rows]
                batch.remove(batch.rows)
                for ticket in failed:
                    self._end(ticket, exc)
        if self.exclusive is not None:
            self._step_exclusive(self.exclusive)

    def _decode(self, batch: DecodeBatch) -> None:
        finished = batch.sample()
        self.stats.steps += 1
        self.stats.rows_stepped += len(batch.rows)
        self.stats.peak_batch = max(self.stats.peak_batch, len(batch.rows))
        gone = list(finished)
        for row in batch.rows:
            if row.owner.reply.cancelled:
                if not row.finished:
                    gone.append(row)
            elif row.error is None:
                self._show(row.owner, row.stopper.stream.final)
        batch.remove(gone)
        for row in gone:
            ticket = row.owner
            if row.error is not None:
                self._end(ticket, row.error)
                continue
            if not ticket.reply.cancelled:
                ticket.reply.stream.finish()
                self._show(ticket, ticket.reply.stream.final)
            self._end(ticket, None)
        batch.forward()

    def _step_exclusive(self, ticket: Ticket) -> None:
        try:
            if ticket.source is None:
                ticket.source = iter(ticket.reply)
            if ticket.reply.cancelled:
                ticket.source.close()
                raise StopIteration
            self._emit(ticket, next(ticket.source))
        except StopIteration:
            self.exclusive = None
            self._end(ticket, None)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            self.exclusive = None
            self._end(ticket, exc)

    def _show(self, ticket: Ticket, final: str) -> None:
        if len(final) > ticket.shown:
            chunk, ticket.shown = final[ticket.shown :], len(final)
            self._emit(ticket, chunk)

    def _emit(self, ticket: Ticket, item) -> None:
        try:
            ticket.emit(ticket.index, item)
        except Exception:  # noqa: BLE001 - the consumer is gone (closed event loop): stop the answer
            ticket.reply.cancel()

    def _end(self, ticket: Ticket, item) -> None:
        if not ticket.ended:
            ticket.ended = True
            self._emit(ticket, item)
