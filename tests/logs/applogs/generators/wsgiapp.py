def app(environ, start_response):
    uid = environ.get("QUERY_STRING", "")
    raise KeyError(f"user-{uid}")
async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup": await send({"type": "lifespan.startup.complete"})
            else: await send({"type": "lifespan.shutdown.complete"}); return
    raise ValueError(f"bad path {scope['path']}")
