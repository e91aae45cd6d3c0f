"""A one-file Django project for gunicorn, configured through ``LOGGING`` (the way Django apps do it).
``gunicorn tests.apps.django_app:application``"""

from __future__ import annotations

import logging
import os

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(os.getpid()))  # the tests wait until every worker has answered


def err(request: HttpRequest) -> HttpResponse:
    logging.getLogger("proc.django").error("payment failed")
    return HttpResponse("logged")


urlpatterns = [path("health", health), path("err", err)]

settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="not-a-secret",
    MIDDLEWARE=[],
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "cloud_eye": {
                "()": "ces_logging.handler_factory",
                "level": "WARNING",
                "event_name": "djangoErr",
                "event_source": "proc.django",
                "flush_interval": "60",
            },
        },
        "root": {"handlers": ["cloud_eye"], "level": "WARNING"},
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings, as Django needs)

application = get_wsgi_application()
