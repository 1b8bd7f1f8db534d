"""`fleet dashboard`: the fleet at a glance, live, in the browser.

A Dash app (Plotly charts, sortable tables) on Flask: the views in `dashboard.views` redraw every
few seconds from the sources in `dashboard.sources`; the episode browser's videos are served by a
Flask route on the same server. It shows everything the fleet does, so it binds to 127.0.0.1
unless a login is configured (`dashboard.password`, HTTP basic auth on every route, pages, updates
and videos alike); any other bind without one is refused.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import threading

import dash
from dash import Input, Output, State, dcc, html
from flask import Response, abort, request, send_file
from werkzeug.serving import make_server

from dashboard import views
from dashboard.media import EpisodeMedia, MediaMissing
from dashboard.sources import Sources
from infra.errors import UsageError
from infra.settings import DashboardSettings, Settings

TABS = {
    "fleet": "Fleet success",
    "rollout": "Rollout",
    "robots": "Robots & tasks",
    "health": "Health",
    "episodes": "Episode browser",
}


def build_app(src: Sources, media: EpisodeMedia, refresh_s: float = 5.0) -> dash.Dash:
    app = dash.Dash(__name__, title="worldfleet", suppress_callback_exceptions=True, update_title=None)
    app.layout = html.Div(
        [
            html.Header(
                [
                    html.H1("worldfleet"),
                    html.Nav(
                        [
                            html.A("MLflow", href=src.mlflow_ui(), target="_blank"),
                            html.A("Prefect", href=src.prefect_ui(), target="_blank"),
                        ]
                    ),
                ]
            ),
            dcc.Tabs(
                id="tab",
                value="fleet",
                children=[dcc.Tab(label=label, value=key, id=f"tab-{key}") for key, label in TABS.items()],
            ),
            dcc.Loading(html.Main(id="view"), delay_show=400),
            dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
            dcc.Store(id="episode-id"),
            # The page brings its own Plotly.js from the assets (dashboard/plotly_bundle.py). Where that
            # file is missing, an empty chart in the first layout starts loading Dash's full bundle with
            # the page, instead of after the first view's callback (eager_loading would also load
            # MathJax, date pickers...).
            dcc.Graph(id="load-plotly-now", style={"display": "none"}),
        ]
    )

    @app.callback(Output("view", "children"), Input("tab", "value"), Input("tick", "n_intervals"))
    def render(tab: str, _):
        if dash.ctx.triggered_id == "tick" and tab == "episodes":
            raise dash.exceptions.PreventUpdate  # a redraw would stop the videos someone is watching
        body = views.VIEWS[tab](src)
        return body + [html.Div(id="episode-detail")] if tab == "episodes" else body

    @app.callback(Output("episode-id", "data"), Input("episode-table", "selected_rows"), State("episode-table", "data"))
    def pick(selected, rows):
        if not selected or not rows:
            raise dash.exceptions.PreventUpdate
        return rows[selected[0]]["episode"]

    @app.callback(Output("episode-detail", "children"), Input("episode-id", "data"))
    def detail(episode_id):
        if not episode_id:
            raise dash.exceptions.PreventUpdate
        return views.episode_detail(src, media, episode_id)

    @app.callback(
        Output("candidates", "children"),
        Input("decision-slider", "value"),
        State("episode-id", "data"),
        prevent_initial_call=True,
    )
    def candidates(decision, episode_id):
        return views.decision_candidates(src, media, episode_id, decision or 0)

    @app.server.route("/media/<episode_id>/<name>.webm")
    def video(episode_id: str, name: str):
        text = src.index.episode_json(episode_id)
        if text is None:
            abort(404, f"episode {episode_id} is not in the index")
        try:
            data = media.video(text, name)
        except MediaMissing as e:
            abort(404, str(e))
        except (ValueError, IndexError) as e:
            abort(404, f"no video {name!r} in episode {episode_id}: {e}")
        return send_file(io.BytesIO(data), mimetype="video/webm", conditional=True, max_age=3600)

    return app


class DashboardServer:
    """The dashboard on a threaded WSGI server; `serve_forever` for the CLI, `start` for tests."""

    def __init__(
        self,
        settings: Settings,
        host: str = "127.0.0.1",
        port: int = 8050,
        refresh_s: float = 5.0,
        sources: Sources | None = None,
    ):
        login = settings.dashboard
        if login.password is None and not _is_loopback(host):
            raise UsageError(
                f"the dashboard shows everything the fleet does; it will not serve {host} without a login",
                hint="set FLEET_DASHBOARD__PASSWORD (and FLEET_DASHBOARD__USER), or bind 127.0.0.1",
            )
        self.sources = sources or Sources.start(settings)
        self.media = EpisodeMedia(settings)
        self.app = build_app(self.sources, self.media, refresh_s)
        if login.password is not None:
            self.app.server.before_request(lambda: _require_login(login))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
        self._server = make_server(host, port, self.app.server, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> DashboardServer:
        threading.Thread(target=self._server.serve_forever, daemon=True, name="dashboard").start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self.sources.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, it is not known to be loopback


def _require_login(login: DashboardSettings) -> Response | None:
    given = request.authorization
    expected = login.password.get_secret_value()
    # compare_digest on both parts: how long a wrong guess takes says nothing about the right one
    if (
        given is not None
        and given.type == "basic"
        and hmac.compare_digest((given.username or "").encode(), login.user.encode())
        and hmac.compare_digest((given.password or "").encode(), expected.encode())
    ):
        return None
    return Response("login required", 401, {"WWW-Authenticate": 'Basic realm="worldfleet dashboard"'})
