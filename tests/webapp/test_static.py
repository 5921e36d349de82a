"""The web app's static files: found by staticfiles, no markup sinks, nothing remote."""

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "static" / "chorus").glob("*.js"))
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("name", ["chorus/chorus.css", "chorus/stream.js", "chorus/session.js", "chorus/api.js"])
def test_staticfiles_finds_the_web_app_files(name):
    assert finders.find(name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_never_write_markup(path):
    source = path.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, f"{path.name} uses {sink}"


@pytest.mark.parametrize(
    "path", [*MODULES, *TEMPLATES, ROOT / "static" / "chorus" / "chorus.css"], ids=lambda p: p.name
)
def test_nothing_is_loaded_from_elsewhere(path):
    source = path.read_text()
    assert "http://" not in source and "https://" not in source and "//cdn" not in source
