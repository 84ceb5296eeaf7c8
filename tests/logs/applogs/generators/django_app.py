import sys, django
from django.conf import settings
settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x",
    LOGGING={"version": 1, "disable_existing_loggers": False,
             "formatters": {"verbose": {"format": "{levelname} {asctime} {module} {process:d} {thread:d} {message}", "style": "{"}},
             "handlers": {"file": {"class": "logging.FileHandler", "filename": sys.argv[1], "formatter": "verbose"}},
             "loggers": {"django": {"handlers": ["file"], "level": "INFO"}}})
from django.urls import path
from django.http import HttpResponse
def order(request, oid):
    if oid % 2: raise KeyError(f"order-{oid}")
    return HttpResponse(str({}[None]))
urlpatterns = [path("orders/<int:oid>", order)]
django.setup()
from django.test import Client
c = Client(raise_request_exception=False)
for oid in (5, 7, 8): c.get(f"/orders/{oid}")
c.get("/missing")
