"""Django: the LOGGING setting that sends warnings and errors to Cloud Eye.

Endpoint, project and credentials come from the environment (CES_REGION or CES_ENDPOINT, CES_PROJECT_ID,
HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK), so the settings file holds no secret.
"""

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "cloud_eye": {
            "()": "ces_logging.handler_factory",
            "level": "WARNING",
            "event_source": "shop.django",
        },
    },
    "root": {"handlers": ["console", "cloud_eye"], "level": "INFO"},
    "loggers": {
        "django.request": {"handlers": ["cloud_eye"], "level": "ERROR", "propagate": False},
    },
}
