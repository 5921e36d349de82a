"""DRF's page-number pagination, strict about its one parameter."""

from __future__ import annotations

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    """`?page=N` given once, N a positive integer (or `last`, as in DRF); anything else is
    DRF's own answer to a page that does not exist: 404 "Invalid page.". DRF itself takes
    the last of repeated values and reads an empty one as page 1, so `?page=x&page=` gave
    the first page where a client had asked for something else (found by Schemathesis)."""

    def get_page_number(self, request, paginator):
        values = request.query_params.getlist(self.page_query_param)
        if len(values) > 1 or (values and values[0] not in self.last_page_strings and not values[0].isdigit()):
            raise NotFound("Invalid page.")
        return super().get_page_number(request, paginator)
