"""The API's content negotiation answers the usual Accept headers at once, exactly as
DRF's own class would, and leaves everything else to DRF."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from sessions_app.negotiation import ApiContentNegotiation

ACCEPTS = [None, "", "*/*", "application/json", "application/json; indent=4", "text/html", "application/*"]


def request_with(accept: str | None, query: str = "") -> Request:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().get("/api/v1/sessions/" + query, **headers))


def answer(negotiation, request, renderers):
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except Exception as error:  # NotAcceptable
        return type(error).__name__
    return type(renderer).__name__, media_type


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
@pytest.mark.parametrize("renderers", [[JSONRenderer()], [JSONRenderer(), BrowsableAPIRenderer()]])
def test_the_same_answer_as_drf(accept, query, renderers):
    ours = answer(ApiContentNegotiation(), request_with(accept, query), renderers)
    assert ours == answer(DefaultContentNegotiation(), request_with(accept, query), renderers)


def test_the_usual_headers_skip_drfs_parsing(monkeypatch):
    def parse(*args, **kwargs):
        raise AssertionError("parsed the Accept header")

    monkeypatch.setattr(DefaultContentNegotiation, "_get_parsed_accept_list", parse)
    for accept in (None, "*/*", "application/json"):
        assert answer(ApiContentNegotiation(), request_with(accept), [JSONRenderer()])[0] == "JSONRenderer"
    with pytest.raises(AssertionError):
        ApiContentNegotiation().select_renderer(request_with("text/html"), [JSONRenderer()])


@pytest.mark.django_db
def test_the_api_uses_it(client):
    assert client.get("/api/v1/sessions/", HTTP_ACCEPT="text/html").status_code == 406
    assert client.get("/api/v1/sessions/", HTTP_ACCEPT="*/*").status_code == 401
