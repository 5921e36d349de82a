from django.urls import path

from webapp import views

urlpatterns = [
    path("", views.session_list, name="web-session-list"),
    path("sessions/<str:session_id>/", views.session_detail, name="web-session-detail"),
]
