from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "Direct stream (OpenAI-compatible)"
