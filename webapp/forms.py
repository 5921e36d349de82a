from django import forms

from sessions_app.models import CollabSession


class SessionCreateForm(forms.Form):
    title = forms.CharField(
        max_length=CollabSession._meta.get_field("title").max_length,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": "What will you work on?", "autocomplete": "off"}),
    )
