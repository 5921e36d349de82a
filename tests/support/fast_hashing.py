"""A fast password hasher for tests: the default PBKDF2 costs ~0.3 s per user created,
which dominated the suite's time. Use `fast_password_hashing` as an autouse fixture."""

import pytest

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
