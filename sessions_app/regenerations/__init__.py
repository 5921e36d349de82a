"""Regenerations: an assistant message written by a model provider, streamed to the session.

- `services`: the writes (start, cancel, each step of a run, the reaper), each in one
  short transaction with its events; every write after `queued` is conditional on the
  status, so a cancelled or reaped run can never write again.
- `selectors`: the reads (access rules, the conversation a provider answers).
- `runner`: the asyncio side — the per-process worker that runs regenerations on the
  server's event loop, coalesces tokens, renews leases, reaps dead runs and obeys
  cross-process cancel commands.
"""
