"""The direct stream: an OpenAI-compatible endpoint at /v1/ (CONTRACT §8).

- `asgi`: the protocol — an ASGI app routed in config/asgi.py: reads the body (capped),
  answers `GET /v1/models` and `POST /v1/chat/completions` in OpenAI's shapes, streams
  chunks, watches for the caller going away.
- `requests`: validation of the request body into a `CompletionRequest`.
- `generation`: one completion run — the provider's chunks, `max_tokens`, the time limit,
  token counts, the mirror into a session.
- `services`: admission (auth, limits, session access), the session mirror and the
  generation log; `selectors`: reads for the ops console; `limits`: rate and concurrency.
"""
