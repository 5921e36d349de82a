"""Prometheus metrics of the direct stream (served with the others at /metrics)."""

from prometheus_client import Counter, Histogram

from completions.models import GenerationStatus

COMPLETIONS = Counter("chorus_completions_total", "Calls of /v1/chat/completions by outcome", ["status"])
COMPLETION_TOKENS = Counter("chorus_completion_tokens_total", "Completion tokens sent to callers of /v1/")
FIRST_TOKEN = Histogram(
    "chorus_completion_first_token_seconds",
    "From receiving a /v1/chat/completions call to its first token",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# Every status is present from the start, at 0, so rates and alerts need no special case.
for _status in GenerationStatus.values:
    COMPLETIONS.labels(_status)
