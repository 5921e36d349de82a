from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime.health import healthz, metrics, readyz
from sessions_app.login import LoginView, LogoutView

urlpatterns = [
    path("api/v1/", include("sessions_app.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("accounts/login/", LoginView.as_view(), name="login"),  # throttled (CONTRACT §2)
    path("accounts/logout/", LogoutView.as_view(), name="logout"),  # ends that login's streams
    path("admin/", admin.site.urls),
]

# With DEBUG on (`make run`), Django serves static files itself, so /api/docs/ and the admin
# work offline with no proxy; in production the proxy serves STATIC_ROOT (collectstatic).
urlpatterns += staticfiles_urlpatterns()

handler400 = "sessions_app.exceptions.json_bad_request"
handler404 = "sessions_app.exceptions.json_not_found"
handler500 = "sessions_app.exceptions.json_server_error"
