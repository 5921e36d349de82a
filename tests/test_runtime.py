"""Server processes tune Python's garbage collector when the ASGI application loads."""

import gc

from django.test import override_settings

from config.runtime import tune_garbage_collector


def test_loading_the_asgi_application_freezes_start_up_objects_and_raises_the_threshold(settings):
    import config.asgi  # noqa: F401  (loading it is what tunes the collector)

    assert gc.get_threshold()[0] == settings.CHORUS_GC_GEN0_THRESHOLD == 50_000
    assert gc.get_freeze_count() > 10_000  # Django, DRF, Channels and the apps


def test_a_threshold_of_zero_keeps_pythons_defaults():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, *before[1:])
        with override_settings(CHORUS_GC_GEN0_THRESHOLD=0):
            tune_garbage_collector()
        assert gc.get_threshold()[0] == 700
    finally:
        gc.set_threshold(*before)
