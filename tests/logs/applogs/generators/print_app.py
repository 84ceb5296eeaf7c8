"""A WSGI app that prints 100 lines, and for /sql a statement of four lines, then raises KeyError: run by gunicorn
with --capture-output, its stdout goes into the error log after (and between) the tracebacks gunicorn logs."""
import sys


def app(environ, start_response):
    path = environ["PATH_INFO"]
    for n in range(100):
        print(f"row {n}: {path} processed")
    if path == "/sql":
        print("SELECT users.id, users.email\nFROM users\nWHERE users.id = %(id)s\n  AND users.active")
    sys.stdout.flush()
    return {"a": 1}[path]
