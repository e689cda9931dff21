"""The labeling page's web server: Starlette routes over a ``Desk``, served by uvicorn in a thread of its own.

Every request must carry the page's random token (``?token=`` or an ``X-Metalabel-Token``
header); anything else gets 403. The server binds 127.0.0.1 unless told otherwise, and
another address only with ``allow_remote`` (``check_host``).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import mimetypes
import secrets
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from metalabel.errors import BadInputError, MetalabelError, MissingDependencyError
from metalabel.label.oracle import as_rgb  # the terminal preview's image conversion, one copy
from metalabel.serve.desk import Desk, Mode
from metalabel.serve.page import PAGE

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as error:  # a core install: say how to get the page
    raise MissingDependencyError(
        "the labeling page needs starlette and uvicorn, which are not installed: pip install 'metalabel[serve]'"
    ) from error

TOKEN_HEADER = "x-metalabel-token"


def check_host(host: str, *, allow_remote: bool) -> bool:
    """Whether ``host`` is a loopback address; a non-loopback one is refused unless ``allow_remote``."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if not loopback and not allow_remote:
        raise BadInputError(
            f"--host {host} would open the labeling page to other machines",
            hint="leave --host out to serve on 127.0.0.1 only; if other machines should reach it, add "
                 "--allow-remote (anyone with the URL and its token can then answer, over plain HTTP)")
    return loopback


class _RequireToken:
    """ASGI middleware: a request without the page's token is refused before any route sees it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) or ""
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                response = JSONResponse({"error": "this page needs the token from the URL metalabel printed; "
                                                  "open that URL"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(desk: Desk, *, token: str) -> ASGIApp:
    """The page and its JSON API over ``desk``, behind the token check."""
    one_at_a_time = asyncio.Lock()  # one person, one action at a time: a double key press cannot answer twice

    def mode_of(request: Request, given: str | None = None) -> Mode:
        try:
            return Mode(given or request.query_params.get("mode", Mode.QUESTIONS.value))
        except ValueError:
            raise BadInputError("mode must be 'questions' or 'review'") from None

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def state(request: Request) -> Response:
        return JSONResponse(desk.state(mode_of(request)))

    async def submit(request: Request, kind: str) -> Response:
        mode = mode_of(request)
        body: Any = {}
        if kind == "answer":
            try:
                body = await request.json()
            except ValueError:
                raise BadInputError("the answer is not JSON") from None
            task = body.get("task") if isinstance(body, dict) else None
            # JSON true is a Python int too: it must not name task 1
            if not isinstance(task, int) or isinstance(task, bool) or not isinstance(body.get("label"), str | None):
                raise BadInputError('an answer is {"task": <id>, "label": <class name or null>}')
        async with one_at_a_time:
            done = desk.submit(mode, kind, task_id=body.get("task"), label=body.get("label"))
            # committed to the store (or refused) by the store's thread; a notice is what to say instead of "saved"
            notice = await asyncio.wrap_future(done)
        return JSONResponse({**desk.state(mode), "notice": notice})

    async def answer(request: Request) -> Response:
        return await submit(request, "answer")

    async def undo(request: Request) -> Response:
        return await submit(request, "undo")

    async def stop(request: Request) -> Response:
        return await submit(request, "stop")

    async def image(request: Request) -> Response:
        task = desk.task(mode_of(request, request.path_params["mode"]), request.path_params["task"])
        headers = {"Cache-Control": "private, max-age=3600"}
        if isinstance(task.item, np.ndarray):
            png = io.BytesIO()
            Image.fromarray(as_rgb(task.item)).save(png, format="PNG")
            return Response(png.getvalue(), media_type="image/png", headers=headers)
        if urlparse(task.uri).scheme in ("http", "https"):
            return RedirectResponse(task.uri)
        path = Path(task.uri)
        if path.is_file():
            return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0], headers=headers)
        raise BadInputError(f"the image of {task.uri!r} is neither in the pool nor a file", path=task.uri)

    async def refused(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": str(error)}, status_code=400 if isinstance(error, BadInputError) else 409)

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/answer", answer, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/image/{mode:str}/{task:int}", image),
    ]
    app = Starlette(routes=routes, exception_handlers={MetalabelError: refused})
    return _RequireToken(app, token)


class Listener:
    """uvicorn serving ``app`` on a socket bound at once, so the port (a free one for 0) is known before it serves."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False) -> None:
        check_host(host, allow_remote=allow_remote)
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(128)  # connections wait in the backlog until uvicorn takes them
        except OSError as error:
            self._socket.close()
            raise BadInputError(f"cannot serve on {host}:{port} ({error.strerror})",
                                hint="choose another --port (0 picks a free one)") from None
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self.serve, name="metalabel-server", daemon=True)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        """Serve in this thread until stopped (Ctrl-C in the main thread)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()


class PageServer:
    """The labeling page served in a daemon thread; ``url`` carries the token. Use as a context manager."""

    def __init__(self, desk: Desk, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False) -> None:
        self.token = secrets.token_urlsafe(24)
        self._listener = Listener(create_app(desk, token=self.token), host=host, port=port, allow_remote=allow_remote)

    @property
    def url(self) -> str:
        return f"{self._listener.base_url}/?token={self.token}"

    def start(self) -> PageServer:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
