import logging, sys
from google.cloud.logging.handlers import StructuredLogHandler
h = StructuredLogHandler(stream=sys.stdout, project_id="demo")
log = logging.getLogger("app"); log.addHandler(h); log.setLevel(logging.DEBUG); log.propagate = False
log.info("started")
for uid in (1, 2):
    try:
        {}[f"user-{uid}"]
    except KeyError:
        log.exception("request failed for user %s", uid)
log.warning("slow query 1234 ms")
log.error("db down")
