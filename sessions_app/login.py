"""The web app's login form (`/accounts/login/`, CONTRACT §2), throttled like the API's, and
its logout, which also ends the streams opened with that login's cookie."""

from __future__ import annotations

import math

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from realtime.publish import streams_recheck
from sessions_app.throttles import login_throttle_check


class SignInForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That username and password did not match. Please try again.",
    }


class _ThrottledForm(SignInForm):
    """The login form as it answers a throttled attempt: the error, and no password check."""

    wait = 0

    def clean(self):
        raise ValidationError(
            "Too many sign-in attempts. Try again in %(seconds)d seconds.",
            code="throttled",
            params={"seconds": self.wait},
        )


class LoginView(auth_views.LoginView):
    """Django's LoginView; past CHORUS_LOGIN_RATE_IP / _USER attempts it shows the form
    again with an error and answers 429 with Retry-After, without checking the password."""

    authentication_form = SignInForm

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        wait = login_throttle_check(request=request, username=request.POST.get("username", ""))
        if wait is None:
            return super().post(request, *args, **kwargs)
        seconds = max(1, math.ceil(wait))
        form = _ThrottledForm(request, data=request.POST)
        form.wait = seconds
        form.is_valid()  # runs clean(): the error shows with the form
        response = self.render_to_response(self.get_context_data(form=form), status=429)
        response["Retry-After"] = str(seconds)
        return response


class LogoutView(auth_views.LogoutView):
    """Django's LogoutView; the user's streams are re-checked once the login session is
    gone, so those opened with its cookie end at once (others stay)."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user_id = request.user.pk if request.user.is_authenticated else None
        response = super().post(request, *args, **kwargs)  # flushes the login session
        if user_id is not None:
            streams_recheck(user_ids=[user_id])
        return response
