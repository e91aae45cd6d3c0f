"""Django's request log (the ``django.server`` logger of ``runserver``) to Cloud Eye, in Django's own format.

The LOGGING below keeps Django's ``django.server`` formatter (``ServerFormatter``, ``[{server_time}] {message}``)
and gives it to the Cloud Eye handler too: the event's content is the line the console prints. 4xx responses
are warnings (Minor events), 5xx errors (Major), the rest Info.

Run as a script, it serves two requests on 127.0.0.1 with Django's development server and exits.
CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
"""

from __future__ import annotations

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "stream": "ext://sys.stdout"},
        "cloud_eye": {
            "()": "ces_logging.handler_factory",
            "formatter": "django.server",  # the same formatter: the same line
            "event_source": "shop.django",
        },
    },
    "loggers": {
        "django.server": {"handlers": ["django.server", "cloud_eye"], "level": "INFO", "propagate": False},
    },
}


def main() -> None:
    import threading
    import urllib.error
    import urllib.request

    import django
    from django.conf import settings
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse
    from django.urls import path

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1"],
        SECRET_KEY="example-only",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        LOGGING=LOGGING,
    )
    globals()["urlpatterns"] = [path("orders", lambda request: HttpResponse("ok"))]
    django.setup()
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        urllib.request.urlopen(f"{base}/orders", timeout=10).read()  # "GET /orders HTTP/1.1" 200 2: Info
        try:
            urllib.request.urlopen(f"{base}/missing", timeout=10)
        except urllib.error.HTTPError as e:  # "GET /missing HTTP/1.1" 404 ...: a warning, Minor
            assert e.code == 404
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


if __name__ == "__main__":
    main()
