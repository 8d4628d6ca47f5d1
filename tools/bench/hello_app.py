"""The ceiling: a bare ASGI app under uvicorn (uvloop, httptools) that reads the body and
answers a fixed prediction. Run inside our own image (same Python, same uvicorn) on the same core;
every real server is reported as a share of what this one carries."""

import os

import uvicorn

BODY = b'{"predictions": [0]}'
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=int(os.environ.get("PORT", "8080")),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )
