from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime.health import healthz, metrics, readyz
from sessions_app.login import LoginView, LogoutView

# The API first, and in it the message routes first: Django tries the patterns in order on
# every request, and resolving a post was 5% of its GIL time (py-spy). No two patterns
# here overlap, so the order changes nothing else (a path no API route takes goes on to
# the next pattern).
urlpatterns = [
    path("api/v1/", include("sessions_app.urls")),
    path("api/v1/ops/", include("ops.api_urls")),
    path("ops/", include("ops.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("accounts/login/", LoginView.as_view(), name="login"),  # throttled (CONTRACT §2)
    path("accounts/logout/", LogoutView.as_view(), name="logout"),  # ends that login's streams
    path("admin/", admin.site.urls),
    path("", include("webapp.urls")),  # the members' pages: /, /sessions/{id}/
]

# Without a proxy (`make run`, where DEBUG is on, or CHORUS_SERVE_STATIC=1), Django serves
# static files itself, so the web app, /api/docs/ and the admin work offline; in production
# the proxy serves STATIC_ROOT (collectstatic).
if settings.CHORUS_SERVE_STATIC:
    urlpatterns += [re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True})]

# JSON on API paths (/api/, /sse/, /v1/), the pages of templates/ elsewhere. With DEBUG on,
# Django skips handler404/500; sessions_app.exceptions.ApiErrorsMiddleware covers the API.
handler400 = "sessions_app.exceptions.bad_request"
handler403 = "sessions_app.exceptions.permission_denied"
handler404 = "sessions_app.exceptions.page_not_found"
handler500 = "sessions_app.exceptions.server_error"
