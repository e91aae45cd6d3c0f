"""A script: one line of set-up, and every warning and error becomes a Cloud Eye event.

CES_REGION=cn-north-4 CES_PROJECT_ID=... HUAWEICLOUD_SDK_AK=... HUAWEICLOUD_SDK_SK=... python one_line.py
"""

import logging

import ces_logging

ces_logging.configure()  # WARNING and above, root logger; settings from the environment

logging.getLogger("nightly.backup").error("backup of %s failed: disk full", "/var/lib/db")
# No flush needed: at exit the handler delivers what is queued (within its grace period, 5 s by default).
