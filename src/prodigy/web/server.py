"""The live dashboard: `prodigy progress --web PORT` serves one job's report and keeps it current.

aiohttp serves the page (`/`), the report as JSON (`/report.json`) and a stream of server-sent
events (`/stream`) carrying the sections of the page that changed since the client last heard.
One poller reads the job's files through a `JobWatch` (read-only, never locking) twice a
second and re-renders when they changed, and once a second anyway while the job runs (its
elapsed time and running bars move), at most a quarter of the time. Building and rendering
run on a thread, so a 100,000-item job never stalls the streams.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import time
from collections.abc import Callable

import msgspec
from aiohttp import web

from prodigy.errors import ProdigyError
from prodigy.job_watch import JobWatch
from prodigy.report import ProgressReport, build_report, encode_report
from prodigy.store import JobDir
from prodigy.web.page import render_page, render_sections

POLL_S = 0.5
LIVE_TICK_S = 1.0  # a running job is re-rendered this often even when its files are still
HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing a quiet stream
SHUTDOWN_S = 1.0
COST_SHARE = 4  # at most one rendering per this many renderings' time

_sections_encoder = msgspec.json.Encoder()


class Dashboard:
    """The latest rendering of one job, and the streams waiting for the next one."""

    def __init__(self, job: JobDir) -> None:
        self.watch = JobWatch(job)
        self.report: ProgressReport | None = None
        self.sections: dict[str, str] = {}
        self.generation = 0
        self._rendered_at = 0.0
        self._render_cost = 0.0
        self._dirty = False
        self._changed = asyncio.Condition()
        self._closing = False

    def _step(self, force: bool) -> tuple[ProgressReport, dict[str, str]] | None:
        """Catch up with the files; a new rendering when something changed (on a thread)."""
        self._dirty = self.watch.refresh() or self._dirty
        since = time.monotonic() - self._rendered_at
        # Rendering a 100,000-item job takes a while: never spend more than a quarter of the
        # time on it, however fast the job's files change.
        pause = max(POLL_S, COST_SHARE * self._render_cost)
        live = self.report is not None and self.report.job.live
        if not force and since < pause:
            return None
        if not (force or self._dirty or (live and since >= max(LIVE_TICK_S, pause))):
            return None
        started = time.monotonic()
        report = build_report(self.watch)
        sections = render_sections(report)
        self._render_cost = time.monotonic() - started
        self._dirty = False
        return report, sections

    async def refresh(self, force: bool = False) -> None:
        rendered = await asyncio.to_thread(self._step, force)
        if rendered is None:
            return
        async with self._changed:
            self.report, self.sections = rendered
            self.generation += 1
            self._rendered_at = time.monotonic()
            self._changed.notify_all()

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self.refresh()

    async def close(self, app: web.Application) -> None:
        """Server shutdown: every open stream returns."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()

    # ---- the routes ----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        assert self.report is not None
        html = render_page(
            self.report, live=True, sections=self.sections, generation=self.generation
        )
        return web.Response(
            text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def report_json(self, request: web.Request) -> web.Response:
        assert self.report is not None
        return web.Response(
            body=encode_report(self.report),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        # A page rendered from the current generation already shows every section as it is.
        known = self.sections if request.query.get("generation") == str(self.generation) else {}
        sent = dict(known)
        seen = -1
        try:
            while not self._closing:
                if self.generation != seen:
                    seen = self.generation
                    changed = {k: html for k, html in self.sections.items() if sent.get(k) != html}
                    if changed:
                        payload = _sections_encoder.encode(changed).decode()
                        await response.write(f"event: sections\ndata: {payload}\n\n".encode())
                        sent.update(changed)
                quiet = False
                async with self._changed:
                    # Checked under the condition: a rendering that landed while this stream was
                    # writing is sent at once rather than after the next one.
                    if self.generation == seen and not self._closing:
                        try:
                            await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                        except TimeoutError:
                            quiet = True
                if quiet:
                    await response.write(b": still here\n\n")
        except ConnectionError:
            pass  # the browser went away
        return response


def _bind_error(host: str, port: int, exc: OSError) -> ProdigyError:
    if exc.errno == errno.EADDRINUSE:
        return ProdigyError(
            f"Port {port} on {host} is already in use, so the dashboard cannot be served there.",
            hint="Choose another with --web PORT (--web 0 picks a free one).",
        )
    if exc.errno == errno.EACCES:
        return ProdigyError(
            f"Port {port} on {host} needs privileges this process lacks.",
            hint="Choose a port above 1023 with --web PORT.",
        )
    reason = exc.strerror or str(exc)
    return ProdigyError(
        f"The dashboard cannot be served on {host} port {port}: {reason}.",
        hint="Check --host names an address of this machine.",
    )


def url_for(host: str, port: int) -> str:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}/"
    return f"http://[{host}]:{port}/" if literal.version == 6 else f"http://{host}:{port}/"


async def serve(job: JobDir, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve the dashboard of `job` until cancelled (Ctrl-C); `ready(url)` once it listens."""
    dashboard = Dashboard(job)
    await dashboard.refresh(force=True)
    app = web.Application()
    app.router.add_get("/", dashboard.page)
    app.router.add_get("/report.json", dashboard.report_json)
    app.router.add_get("/stream", dashboard.stream)
    app.on_shutdown.append(dashboard.close)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_S)
    try:
        try:
            await site.start()
        except OSError as exc:
            raise _bind_error(host, port, exc) from None
        bound = runner.addresses[0][1] if runner.addresses else port
        ready(url_for(host, bound))
        await dashboard.poll()
    finally:
        await runner.cleanup()
