"""A small web site for the browser agent's tests, served on loopback by the tests.

Pages: a small shop (a health endpoint, a home page and a login page, whose look
the tests change between "deploys" through ``site.release``), a form, a list with pagination, a slow page, an inaccessible and an accessible
page, a heavy page (long tasks, layout shift, a late large image), a page for visual
regression in two variants, redirect chains, and "trick" pages that try to make the
browser reach a target through subresources, scripts and sockets. Baseline images the
tests put in ``site.files`` are served under /files/.

Also a canary: a TCP server that counts every connection made to it, whatever the
protocol, so "0 canary hits" means nothing reached it at all.
"""

from __future__ import annotations

import asyncio
import base64
import html
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.servers import Loop, serve

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:20px}} .box{{width:200px;height:100px}}</style>
</head><body>{body}</body></html>"""


def page(title: str, body: str) -> web.Response:
    return web.Response(
        text=PAGE.format(title=html.escape(title), body=body), content_type="text/html"
    )


ITEMS = [f"Item {i}" for i in range(1, 8)]
PER_PAGE = 3


async def index(_: web.Request) -> web.Response:
    return page("Fixture", "<h1>Fixture site</h1><p id='intro'>Hello from the fixture.</p>"
                "<a href='/form'>form</a> <a href='/list'>list</a>")  # fmt: skip


async def form(_: web.Request) -> web.Response:
    return page(
        "Form",
        """<h1>Sign up</h1>
<form action="/form/done" method="get">
 <label for="name">Name</label><input id="name" name="name">
 <label for="plan">Plan</label><select id="plan" name="plan">
   <option value="free">Free</option><option value="pro">Pro</option></select>
 <button id="submit" type="submit">Send</button>
</form>""",
    )


async def form_done(request: web.Request) -> web.Response:
    name = html.escape(request.query.get("name", ""))
    plan = html.escape(request.query.get("plan", ""))
    return page("Done", f"<h1 id='thanks'>Thanks, {name}</h1><p id='plan'>Plan: {plan}</p>")


PRIVATE_USER = "ada"
PRIVATE_PASSWORD = "pw-basic-5c2e9a"


async def private(request: web.Request) -> web.Response:
    """Behind basic auth; shows the session cookie it was sent (echoing secrets back)."""
    want = "Basic " + base64.b64encode(f"{PRIVATE_USER}:{PRIVATE_PASSWORD}".encode()).decode()
    if request.headers.get("Authorization") != want:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fixture"'})
    session = html.escape(request.cookies.get("session", ""))
    return page("Private", f"<h1 id='private'>Welcome</h1><p id='session'>session={session}</p>")


async def listing(request: web.Request) -> web.Response:
    n = int(request.query.get("page", "1"))
    items = ITEMS[(n - 1) * PER_PAGE : n * PER_PAGE]
    lis = "".join(f"<li class='item' data-id='{i}'>{html.escape(t)}</li>" for i, t in
                  enumerate(items, start=(n - 1) * PER_PAGE + 1))  # fmt: skip
    nxt = f"<a id='next' href='/list?page={n + 1}'>next</a>" if n * PER_PAGE < len(ITEMS) else ""
    return page(f"List {n}", f"<h1>List page {n}</h1><ul>{lis}</ul>{nxt}")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "30")))
    return page("Slow", "<h1>finally</h1>")


async def slow_element(_: web.Request) -> web.Response:
    # Loads at once; its content appears later, and a script keeps the page busy.
    return page(
        "Slow element",
        """<h1>Waiting</h1><div id="late"></div>
<script>setTimeout(() => { document.getElementById('late').innerHTML = '<p id="ready">ready</p>'; }, 60000);</script>""",
    )


async def inaccessible(_: web.Request) -> web.Response:
    return web.Response(
        content_type="text/html",
        text="""<!doctype html><html><head><title></title></head>
<body><img src="/img.png"><input type="text"><button></button>
<p style="color:#ccc;background:#fff">low contrast text</p><a href="#"></a></body></html>""",
    )


async def accessible(_: web.Request) -> web.Response:
    return page("Accessible", "<main><h1>All good</h1><p>Plain, readable text.</p></main>")


async def heavy(_: web.Request) -> web.Response:
    rows = "".join(f"<tr><td>{i}</td><td>row {i}</td></tr>" for i in range(3000))
    return page(
        "Heavy",
        f"""<h1>Heavy</h1><div id="shift"></div><table>{rows}</table>
<script>
  // 300 ms long tasks just after the first paint (where Total Blocking Time counts them),
  // three of them: Chromium sometimes drops the entry of one while the parser still holds
  // the page (seen under a loaded CI machine), so one is always measured.
  const block = () => {{ const t0 = performance.now(); while (performance.now() - t0 < 300) {{}} }};
  requestAnimationFrame(() => setTimeout(() => {{
    block();
    document.getElementById('shift').style.height = '300px';  // and a layout shift
    setTimeout(block, 50);
    setTimeout(block, 400);
  }}, 0));
</script>""",
    )


async def visual(request: web.Request) -> web.Response:
    color = "#c00" if request.query.get("variant") == "b" else "#06c"
    return page(
        "Visual",
        f"""<h1>Visual</h1>
<div id="box" class="box" style="background:{color}"></div><p>Unchanged text.</p>""",
    )


async def shop(request: web.Request) -> web.Response:
    rel = request.app[RELEASE_KEY]
    return page("Shop", f"""<header><nav><a href="/shop/">Home</a> <a href="/shop/login">Sign in</a></nav></header>
<h1>Shop</h1><div id="banner" class="box" style="background:{rel['color']}"></div>
<p>Release {html.escape(rel['version'])}.</p>""")  # fmt: skip


async def shop_login(_: web.Request) -> web.Response:
    return page("Sign in", '<h1>Sign in</h1><form id="login"><input id="email"></form>')


async def shop_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": request.app[RELEASE_KEY]["version"]})


async def img(_: web.Request) -> web.Response:
    # 1x1 transparent PNG
    return web.Response(body=bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"),
        content_type="image/png")  # fmt: skip


async def redirect(request: web.Request) -> web.Response:
    hops = int(request.query.get("hops", "1"))
    to = request.query["to"]
    if hops <= 1:
        raise web.HTTPFound(to)
    raise web.HTTPFound(f"/redirect?hops={hops - 1}&to={to}")


# Each trick makes the page reach `target` some other way than a navigation.
TRICKS = {
    "img": "<img src='{t}'>",
    "iframe": "<iframe src='{t}'></iframe>",
    "script": "<script src='{t}'></script>",
    "stylesheet": "<link rel='stylesheet' href='{t}'>",
    "css-import": "<style>@import url('{t}');</style>",
    "css-background": "<div style=\"width:10px;height:10px;background:url('{t}')\"></div>",
    "font-face": "<style>@font-face{{font-family:x;src:url('{t}')}} p{{font-family:x}}</style><p>x</p>",
    "fetch": "<script>fetch('{t}').catch(()=>{{}})</script>",
    "xhr": "<script>const x=new XMLHttpRequest();x.open('GET','{t}');x.send()</script>",
    "beacon": "<script>navigator.sendBeacon('{t}','x')</script>",
    "eventsource": "<script>new EventSource('{t}')</script>",
    "websocket": "<script>try{{new WebSocket('{ws}')}}catch(e){{}}</script>",
    "form-post": "<form id=f method=post action='{t}'><input name=a value=b></form><script>f.submit()</script>",
    "meta-refresh": "<meta http-equiv='refresh' content='0;url={t}'>",
    "location": "<script>location.href='{t}'</script>",
    "window-open": "<script>window.open('{t}')</script>",
    "object": "<object data='{t}'></object>",
    "video": "<video src='{t}' autoplay></video>",
    "prefetch": "<link rel='prefetch' href='{t}'><link rel='preload' as='image' href='{t}'>",
    "ping": "<a id=a href='/' ping='{t}'>x</a><script>a.click()</script>",
    "service-worker": "<script>navigator.serviceWorker && navigator.serviceWorker.register('/sw.js')</script>",
    "file-iframe": "<iframe src='file:///etc/passwd'></iframe>",
    "file-location": "<script>location.href='file:///etc/passwd'</script>",
}


async def trick(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    t = html.escape(request.query["target"], quote=True)
    ws = t.replace("http://", "ws://", 1)
    return page(f"trick {kind}", TRICKS[kind].format(t=t, ws=ws))


async def service_worker(request: web.Request) -> web.Response:
    target = request.app[CANARY_KEY]
    return web.Response(text=f"fetch('{target}')", content_type="text/javascript")


CANARY_KEY = web.AppKey("canary", str)
FILES_KEY = web.AppKey("files", dict)
RELEASE_KEY = web.AppKey("release", dict)


async def files(request: web.Request) -> web.Response:
    body = request.app[FILES_KEY].get(request.match_info["name"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="image/png")


def make_app(canary_url: str = "http://127.0.0.2:9/") -> web.Application:
    app = web.Application()
    app[CANARY_KEY] = canary_url
    app[FILES_KEY] = {}
    app[RELEASE_KEY] = {"version": "1.0", "color": "#06c"}
    r = app.router
    for path, h in [("/", index), ("/form", form), ("/form/done", form_done), ("/list", listing),
                    ("/slow", slow), ("/slow-element", slow_element), ("/inaccessible", inaccessible),
                    ("/accessible", accessible), ("/heavy", heavy), ("/visual", visual),
                    ("/img.png", img), ("/redirect", redirect), ("/trick/{kind}", trick),
                    ("/sw.js", service_worker), ("/files/{name}", files), ("/private", private),
                    ("/shop/", shop), ("/shop/login", shop_login), ("/shop/healthz", shop_health)]:  # fmt: skip
        r.add_get(path, h)
    return app


@dataclass
class Canary:
    """Counts TCP connections; answers anything with a short HTTP 200."""

    host: str
    port: int = 0
    hits: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> Canary:
        self.server = await asyncio.start_server(self._conn, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(r.read(200), 2)
        except (TimeoutError, OSError):
            first = b""
        self.hits.append(first or b"<connect>")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
        try:
            await w.drain()
        finally:
            w.close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass
class Site:
    url: str
    app: web.Application
    host: str
    port: int

    @property
    def files(self) -> dict[str, bytes]:
        return self.app[FILES_KEY]

    @property
    def release(self) -> dict[str, str]:
        """The shop's release: its version and banner colour (a "deploy" changes them)."""
        return self.app[RELEASE_KEY]


async def start_site(host: str = "127.0.0.1", canary_url: str = "") -> tuple[Site, web.AppRunner]:
    app = make_app(canary_url)
    url, runner = await serve(app, host)
    return Site(url, app, host, runner.addresses[0][1]), runner


@contextmanager
def site_in_thread(
    canary_hosts: tuple[str, ...] = ("127.0.0.2",), host: str = "127.0.0.1"
) -> Iterator[tuple[Site, list[Canary]]]:
    """The site (on ``host``) and canaries on their own event loop in a thread (for
    synchronous tests)."""
    loop = Loop()

    async def boot() -> tuple[Site, web.AppRunner, list[Canary]]:
        canaries = [await Canary(h).start() for h in canary_hosts]
        site, runner = await start_site(
            host, canary_url=canaries[0].url + "/sw" if canaries else ""
        )
        return site, runner, canaries

    site, runner, canaries = loop.run(boot(), 10)
    try:
        yield site, canaries
    finally:
        loop.run(runner.cleanup(), 10)
        loop.stop()


def main() -> None:
    """``python -m tests.fixture_site PORT [HOST]`` from the repository root: serve the
    site on HOST, 127.0.0.1 by default, or the real node's address for its pods
    (harness.start_fixture_site: make demo and bench/browser_tasks.py)."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    web.run_app(make_app(), host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
