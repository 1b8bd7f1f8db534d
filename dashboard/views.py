"""The dashboard's views, each a function from the sources to Dash components.

Views never raise: a source with nothing to show, or a service that does not answer, becomes a
notice that says which and what to do, next to whatever the other sources could still show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import numpy as np
import plotly.graph_objects as go
from dash import dash_table, dcc, html

from dashboard.media import EpisodeMedia, MediaMissing
from dashboard.sources import SourceMissing, Sources, iso
from infra.clients import ServiceUnavailable
from infra.contracts.episode import Episode
from infra.stats import wilson
from learner.episode_index import IndexMissing
from registry.analysis import AnalysisConfig, Arm, analyse

EVENT_COLOURS = {"canary": "#e69f00", "champion": "#009e73", "rolled_back": "#d55e00", "retired": "#999999"}
NO_EPISODES = "No episodes in the index yet: start robots with `fleet agents run --robots N` and the learner with `fleet loop serve`."


def notice(message: str, kind: str = "info") -> html.Div:
    return html.Div(message, className=f"notice notice-{kind}", role="status")


def guarded(view: Callable[..., list]) -> Callable[..., list]:
    """A view whose sources may be missing: their message instead of a stack trace."""

    def run(*args, **kwargs) -> list:
        try:
            return view(*args, **kwargs)
        except (SourceMissing, IndexMissing, ServiceUnavailable, MediaMissing) as e:
            return [notice(str(e), "warning")]

    run.__name__ = view.__name__
    return run


def _service(src: Sources, name: str):
    """A service's latest snapshot value, or raise its error (`guarded` turns it into a notice)."""
    snapshot = src.poller(name).snapshot
    if snapshot.value is None:
        raise ServiceUnavailable(snapshot.error or f"{name}: no reading yet")
    return snapshot.value


def _stale(src: Sources, *names: str) -> list:
    """Notices for services whose latest reading failed (the view shows their last good one)."""
    snapshots = [src.poller(n).snapshot for n in names]
    return [
        notice(s.error + (" (showing the last reading)" if s.value is not None else ""), "warning")
        for s in snapshots
        if s.error
    ]


def _graph(figure: go.Figure, graph_id: str, height: int = 360) -> dcc.Graph:
    figure.update_layout(margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=height, template="plotly_white")
    return dcc.Graph(
        id=graph_id, figure=figure, config={"displayModeBar": False}
    )  # drag zooms, double-click resets; the bar covered titles


def _table(
    table_id: str, columns: list[str], rows: list[dict], links: tuple[str, ...] = (), **options
) -> dash_table.DataTable:
    """A sortable, filterable table; `links` are columns of markdown links, opened in a new tab."""
    defaults = {
        "sort_action": "native",
        "filter_action": "native",
        "page_size": 15,
        "style_table": {"overflowX": "auto"},
        "style_cell": {"fontFamily": "inherit", "padding": "4px 8px", "textAlign": "left"},
        "style_header": {"fontWeight": "600"},
        "markdown_options": {"link_target": "_blank"},
    }
    return dash_table.DataTable(
        id=table_id,
        data=rows,
        **(defaults | options),
        columns=[{"name": c, "id": c} | ({"presentation": "markdown"} if c in links else {}) for c in columns],
    )


# -- Fleet: success over time per version, with rollout events ---------------------------------------
@guarded
def fleet(src: Sources) -> list:
    total = src.index.count()
    if total == 0:
        return [notice(NO_EPISODES)]
    width, rows = src.index.success_timeline()
    fig = go.Figure()
    for version in sorted({r[1] for r in rows}, key=_version_key):
        mine = [r for r in rows if r[1] == version]
        n = np.array([r[2] for r in mine])
        rate = np.array([r[3] for r in mine]) / n
        fig.add_trace(
            go.Scatter(
                x=[datetime.fromtimestamp(r[0]) for r in mine],
                y=rate.tolist(),
                name=f"version {version}",
                mode="lines+markers",
                customdata=np.stack([n, rate * n], axis=1).tolist(),
                hovertemplate="%{x}<br>success %{y:.0%} (%{customdata[1]:.0f}/%{customdata[0]:.0f})<extra>version "
                + version
                + "</extra>",
            )
        )
    events = _rollout_events(src)
    for at, version, state, reason in events:
        fig.add_vline(x=at.timestamp() * 1000, line_dash="dot", line_color=EVENT_COLOURS.get(state, "#555"))
        fig.add_annotation(
            x=at,
            y=1.02,
            yref="paper",
            text=f"v{version} {state.replace('_', ' ')}",
            showarrow=False,
            font={"size": 10, "color": EVENT_COLOURS.get(state, "#555")},
            hovertext=reason,
            textangle=-30,
        )
    fig.update_layout(
        title=f"fleet success per {_duration(width)}, by model version",
        showlegend=True,
        yaxis={"tickformat": ".0%", "range": [-0.02, 1.02]},
    )
    wins = sum(r[3] for r in rows)
    heartbeats = src.kafka.snapshot.value.heartbeats if src.kafka.snapshot.value is not None else {}
    live = sum(1 for h in heartbeats.values() if _age_s(h["at"]) < 60)
    aliases = src.registry.snapshot.value["aliases"] if src.registry.snapshot.value else {}
    return [
        *_stale(src, "kafka", "mlflow"),
        html.Div(
            className="kpis",
            children=[
                _kpi("episodes", f"{total:,}"),
                _kpi("success", f"{wins / total:.1%}"),
                _kpi("robots live (heartbeat < 60 s)", str(live) if src.kafka.snapshot.value is not None else "?"),
                _kpi("champion", aliases.get("champion", "-")),
                _kpi("canary", aliases.get("canary", "-")),
            ],
        ),
        _graph(fig, "success-timeline"),
        _graph(_learning_curve(src, events), "learning-curve", height=300),
    ]


def _learning_curve(src: Sources, events: list[tuple[datetime, str, str, str]]) -> go.Figure:
    """Success of every model version's episodes with its 95% interval, versions in the order they
    were registered: the loop's learning curve as the fleet lived it (canary episodes included).
    Each point is coloured by the version's latest rollout state."""
    state = {version: s for _, version, s, _ in events}  # events are in time order: the last wins
    rows = sorted((r for r in src.index.per("policy_version") if r[0].isdigit()), key=lambda r: int(r[0]))
    rates = [wins / n for _, n, wins, _, _ in rows]
    intervals = [wilson(wins, n) for _, n, wins, _, _ in rows]
    fig = go.Figure(
        go.Scatter(
            x=[f"v{r[0]}" for r in rows],
            y=rates,
            mode="lines+markers",
            name="success",
            error_y={
                "type": "data",
                "array": [high - rate for (_, high), rate in zip(intervals, rates, strict=True)],
                "arrayminus": [rate - low for (low, _), rate in zip(intervals, rates, strict=True)],
            },
            marker={"size": 11, "color": [EVENT_COLOURS.get(state.get(r[0], ""), "#0072b2") for r in rows]},
            customdata=[[n, wins, state.get(v, "registered")] for v, n, wins, _, _ in rows],
            hovertemplate="%{x}: %{y:.0%} (%{customdata[1]}/%{customdata[0]}), %{customdata[2]}<extra></extra>",
        )
    )
    fig.update_layout(
        title="learning curve: success of each model version's episodes, 95% interval (colour: rollout state)",
        yaxis={"tickformat": ".0%", "range": [-0.02, 1.02]},
    )
    return fig


def _kpi(label: str, value: str) -> html.Div:
    return html.Div([html.Div(value, className="kpi-value"), html.Div(label, className="kpi-label")], className="kpi")


def _rollout_events(src: Sources) -> list[tuple[datetime, str, str, str]]:
    registry = src.registry.snapshot.value
    if registry is None:
        return []
    events = [
        (datetime.fromisoformat(h["at"]).astimezone().replace(tzinfo=None), v.version, h["state"], h.get("reason", ""))
        for v in registry["versions"]
        for h in v.history
    ]
    return sorted(events)


# -- Rollout: canary against champion, versions, flow runs ------------------------------------------
@guarded
def rollout(src: Sources) -> list:
    registry = _service(src, "mlflow")
    aliases, versions = registry["aliases"], {v.version: v for v in registry["versions"]}
    if not versions:
        return [
            *_stale(src, "mlflow"),
            notice(
                f"No versions of {src.settings.registry.model_name} in MLflow yet: "
                "register one with `fleet rollout register --policy DIR --crown`."
            ),
        ]
    return [
        *_stale(src, "mlflow", "kafka", "prefect"),
        *_canary(src, aliases, versions),
        html.H3("versions"),
        _versions_table(src, versions),
        html.H3("flow runs"),
        *_flow_runs(src),
    ]


def _canary(src: Sources, aliases: dict, versions: dict) -> list:
    champion = aliases.get("champion")
    if "canary" in aliases:
        canary = versions[aliases["canary"]]
        started = next((h["at"] for h in reversed(canary.history) if h["state"] == "canary"), None)
        since = datetime.fromisoformat(started).timestamp() if started else 0.0
        arms = _live_arms(src, since)
        c, h = arms.get(canary.version, Arm(0, 0)), arms.get(champion, Arm(0, 0))
        verdict = analyse(c, h, AnalysisConfig()).as_dict()
        title = f"canary {canary.version} vs champion {champion}, live since {iso(since)[11:]}"
        source = "the default analysis thresholds, on live telemetry"
    else:
        recorded = [v for v in versions.values() if "canary_analysis" in v.tags]
        if not recorded:
            return [notice("No canary has run yet: `fleet rollout canary VERSION` or an improvement round starts one.")]
        last = max(recorded, key=lambda v: _version_key(v.version))
        verdict = _recorded_verdict(last.tags["canary_analysis"])
        if verdict is None:
            return [
                notice(f"Version {last.version}'s canary_analysis tag in MLflow is not a canary analysis.", "warning")
            ]
        c = Arm(verdict["canary_successes"], verdict["canary_episodes"])
        h = Arm(verdict["champion_successes"], verdict["champion_episodes"])
        title = f"last canary: version {last.version}, now {last.state.replace('_', ' ')}"
        source = "the analysis recorded in MLflow when it decided"
    fig = go.Figure()
    for name, arm, colour in (("canary", c, EVENT_COLOURS["canary"]), ("champion", h, EVENT_COLOURS["champion"])):
        low, high = wilson(arm.successes, arm.episodes)
        fig.add_trace(
            go.Bar(
                x=[name],
                y=[arm.rate],
                marker_color=colour,
                name=name,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [high - arm.rate],
                    "arrayminus": [arm.rate - low],
                },
                text=[f"{arm.successes}/{arm.episodes}"],
                textposition="outside",
            )
        )
    fig.update_layout(title=title, yaxis={"tickformat": ".0%", "range": [0, 1.05]}, showlegend=False)
    rows = [{"figure": k.replace("_", " "), "value": str(v)} for k, v in verdict.items()]
    return [
        html.Div(
            className="row",
            children=[
                html.Div(_graph(fig, "canary-chart"), className="col"),
                html.Div(
                    [
                        html.H3(f"verdict: {verdict['decision']}", id="canary-verdict"),
                        html.P(f"from {source}"),
                        _table("canary-verdict-table", ["figure", "value"], rows, page_size=20, filter_action="none"),
                    ],
                    className="col",
                ),
            ],
        )
    ]


def _recorded_verdict(tag: str) -> dict | None:
    """The canary analysis recorded in a version's tag, or None if the tag holds something else:
    MLflow's tags are writable by anyone the server lets register, and one bad tag must not take
    the versions table and the flow runs down with it."""
    try:
        verdict = json.loads(tag)
    except ValueError:
        return None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("decision"), str):
        return None
    for arm in ("canary", "champion"):
        wins, episodes = verdict.get(f"{arm}_successes"), verdict.get(f"{arm}_episodes")
        if not (isinstance(wins, int) and isinstance(episodes, int) and 0 <= wins <= episodes):
            return None
    return verdict


def _live_arms(src: Sources, since: float) -> dict[str, Arm]:
    arms: dict[str, Arm] = {}
    for e in list(_service(src, "kafka").episodes):
        if e.at >= since:
            arms[e.version] = arms.get(e.version, Arm(0, 0)) + Arm(int(e.success), 1, e.rejections, e.candidates)
    return arms


def _versions_table(src: Sources, versions: dict) -> dash_table.DataTable:
    runs = {r["id"]: r for r in (src.prefect.snapshot.value or [])}
    rows = []
    for v in sorted(versions.values(), key=lambda v: -_version_key(v.version)):
        run = v.tags.get("prefect_flow_run_id", "")
        rows.append(
            {
                "version": v.version,
                "state": v.state,
                "aliases": ", ".join(v.aliases),
                "parent": v.tags.get("parent_version", ""),
                "eval success": v.tags.get("eval.success_rate", ""),
                "last transition": v.history[-1]["at"] if v.history else "",
                "MLflow": f"[open]({src.mlflow_ui(v.version)})",
                "Prefect": f"[{runs.get(run, {}).get('name', 'flow run')}]({src.prefect_ui(run)})" if run else "",
            }
        )
    columns = ["version", "state", "aliases", "parent", "eval success", "last transition", "MLflow", "Prefect"]
    return _table("versions-table", columns, rows, links=("MLflow", "Prefect"), page_size=10, filter_action="none")


def _flow_runs(src: Sources) -> list:
    runs = src.prefect.snapshot.value
    if runs is None:
        return [notice(src.prefect.snapshot.error or "prefect: no reading yet", "warning")]
    if not runs:
        return [
            notice(
                f"No flow runs tagged {src.settings.registry.flow_run_tag} yet: "
                "`fleet loop` and `fleet demo` tag the rounds they run."
            )
        ]
    return [
        html.Ul(
            [
                html.Li(
                    [
                        html.A(r["name"], href=src.prefect_ui(r["id"]), target="_blank"),
                        f" {r['flow']}: {r['state']}, started {r['start'] or '-'}",
                    ]
                )
                for r in runs[:10]
            ]
        ),
        html.A("all flow runs in the Prefect UI", href=src.prefect_ui(), target="_blank"),
    ]


# -- Robots and tasks -------------------------------------------------------------------------------
@guarded
def robots_tasks(src: Sources) -> list:
    if src.index.count() == 0:
        return [notice(NO_EPISODES)]
    out = []
    for by, title in (("robot_id", "robot"), ("task_id", "task")):
        rows = [
            {title: key, "episodes": n, "success": round(wins / n, 3), "last seen": iso(last), "model version": version}
            for key, n, wins, last, version in src.index.per(by)
        ]
        table = _table(f"{title}-table", [title, "episodes", "success", "last seen", "model version"], rows)
        table.columns[2]["type"], table.columns[2]["format"] = "numeric", {"specifier": ".0%"}
        out += [html.H3(f"per {title} ({len(rows)})"), table]
    return out


# -- Health: latency, rejections, ingest lag, dead letters ------------------------------------------
@guarded
def health(src: Sources) -> list:
    out: list = [*_stale(src, "kafka")]
    telemetry = src.kafka.snapshot.value
    figs = []
    if telemetry is not None and telemetry.episodes:
        by_version: dict[str, list] = {}
        for e in list(telemetry.episodes):
            by_version.setdefault(e.version, []).append(
                (e.decision_ms_p50, e.decision_ms_p95, e.rejections, e.candidates)
            )
        versions = sorted(by_version, key=_version_key)
        lat = go.Figure()
        for label, column, q in (("p50", 0, 50), ("p95", 1, 95), ("p99", 1, 99)):
            lat.add_trace(
                go.Bar(
                    name=label,
                    x=[f"v{v}" for v in versions],
                    y=[float(np.percentile([r[column] for r in by_version[v]], q)) for v in versions],
                )
            )
        lat.update_layout(title="decision latency per version (ms)", barmode="group")
        rej = go.Figure(
            go.Bar(
                x=[f"v{v}" for v in versions],
                marker_color="#d55e00",
                y=[sum(r[2] for r in by_version[v]) / max(sum(r[3] for r in by_version[v]), 1) for v in versions],
            )
        )
        rej.update_layout(title="candidates rejected, per version", yaxis={"tickformat": ".0%", "rangemode": "tozero"})
        figs += [
            html.Div(_graph(lat, "latency-chart"), className="col"),
            html.Div(_graph(rej, "rejection-chart"), className="col"),
        ]
    elif telemetry is not None:
        out.append(notice("No episode telemetry in the last 24 h: are agents running (`fleet agents run`)?"))
    try:
        lag = src.index.ingest_lag_s()
    except IndexMissing as e:
        lag = []
        out.append(notice(str(e), "warning"))
    if lag:
        fig = go.Figure(go.Histogram(x=lag, nbinsx=40, marker_color="#0072b2"))
        fig.update_layout(
            title=f"ingest lag (s): p50 {np.percentile(lag, 50):.2f}, p95 {np.percentile(lag, 95):.2f}",
            xaxis_title=f"publish to indexed, the last {len(lag)} episodes",
        )
        figs.append(html.Div(_graph(fig, "ingest-lag-chart"), className="col"))
    if telemetry is not None:
        dead = telemetry.dead_letters
        fig = go.Figure(go.Bar(x=list(dead) or ["none"], y=list(dead.values()) or [0], marker_color="#cc79a7"))
        fig.update_layout(title=f"dead letters by reason: {sum(dead.values())}", yaxis={"rangemode": "tozero"})
        figs.append(html.Div(_graph(fig, "dead-letter-chart"), className="col"))
        if lost := telemetry.lost_on_robots:
            out.append(
                notice(
                    f"{lost['episode_not_kept']} episodes not kept (robot's spool full), "
                    f"{lost['episode_quarantined']} quarantined on robots; latest: {telemetry.last_loss['robot_id']}: "
                    f"{telemetry.last_loss['reason']}",
                    "warning",
                )
            )
        if telemetry.unreadable:
            out.append(
                notice(
                    f"{telemetry.unreadable} records on the telemetry topic are not telemetry and were skipped "
                    "(the dashboard's log names each by partition and offset)",
                    "warning",
                )
            )
        if telemetry.refused:
            out.append(
                notice(
                    f"{len(telemetry.refused)} model loads refused by agents; latest: {telemetry.refused[-1]['reason']}",
                    "warning",
                )
            )
    return out + [html.Div(figs, className="grid")]


# -- Episodes: the browser --------------------------------------------------------------------------
@guarded
def episodes(src: Sources) -> list:
    rows = src.index.latest(500)
    if not rows:
        return [notice(NO_EPISODES)]
    data = [
        {
            "episode": e,
            "robot": r,
            "task": t,
            "version": v,
            "ended": iso(end),
            "success": "yes" if ok else "no",
            "steps": steps,
            "decisions": d,
            "rejections": rej,
        }
        for e, r, t, v, end, ok, steps, d, rej in rows
    ]
    table = _table("episode-table", list(data[0]), data, page_size=10, row_selectable="single", selected_rows=[0])
    table.hidden_columns = ["episode"]
    table.css = [{"selector": ".show-hide", "rule": "display: none"}]
    return [html.P(f"the latest {len(rows)} episodes; pick one to see what the robot imagined and what it did"), table]


def _episode(src: Sources, media: EpisodeMedia, episode_id: str) -> tuple[Episode, int]:
    """The indexed episode and its candidates per decision in the media (loading, and so checking, them)."""
    text = src.index.episode_json(episode_id)
    if text is None:
        raise SourceMissing(f"episode {episode_id} is not in the index")
    return Episode.model_validate_json(text), media.arrays(text)["imagined_videos"].shape[1]  # MediaMissing says why


@guarded
def episode_detail(src: Sources, media: EpisodeMedia, episode_id: str) -> list:
    episode, k = _episode(src, media, episode_id)
    header = html.P(
        f'{episode.robot_id}: "{episode.instruction}" with version {episode.model_versions.policy}: '
        f"{'success' if episode.success else 'failure'} in {len(episode.actions)} steps, "
        f"{len(episode.decisions)} decisions"
    )
    videos = html.Div(
        className="row",
        children=[
            _video(
                f"/media/{episode_id}/imagined.webm",
                "imagined (the chosen future, decision by decision)",
                "video-imagined",
            ),
            _video(f"/media/{episode_id}/executed.webm", "executed (the camera)", "video-executed"),
        ],
    )
    slider = dcc.Slider(
        id="decision-slider",
        min=0,
        max=max(len(episode.decisions) - 1, 0),
        step=1,
        value=0,
        marks=None,
        tooltip={"placement": "bottom", "always_visible": True},
    )
    return [
        header,
        videos,
        html.H3("actions"),
        _graph(_actions_figure(episode), "actions-chart", 260),
        html.H3("one decision's candidates"),
        slider,
        html.Div(_candidates(episode, k, 0, episode_id), id="candidates"),
    ]


@guarded
def decision_candidates(src: Sources, media: EpisodeMedia, episode_id: str, decision: int) -> list:
    """What the slider shows: one decision's candidates, without redrawing the rest of the episode."""
    episode, k = _episode(src, media, episode_id)
    return _candidates(episode, k, min(max(decision, 0), max(len(episode.decisions) - 1, 0)), episode_id)


def _video(src_url: str, caption: str, video_id: str) -> html.Figure:
    return html.Figure(
        [
            html.Video(
                src=src_url, id=video_id, controls=True, autoPlay=True, loop=True, muted=True, className="episode-video"
            ),
            html.Figcaption(caption),
        ],
        className="col",
    )


def _candidates(episode: Episode, k: int, d: int, episode_id: str) -> list:
    if not episode.decisions:
        return [notice("this episode has no decisions")]
    decision = episode.decisions[d]
    shown = decision.candidates[-k:]  # after a resample the media keep the last round's K
    cells = []
    for j, c in enumerate(shown):
        status = (
            "chosen"
            if c.index == decision.chosen
            else f"rejected: {c.rejection_reason}"
            if c.rejected
            else "alternative"
        )
        score = "-" if c.score is None else f"{c.score:.3f}"
        cells.append(
            html.Figure(
                [
                    html.Video(
                        src=f"/media/{episode_id}/d{d}c{j}.webm",
                        autoPlay=True,
                        loop=True,
                        muted=True,
                        className="candidate-video",
                    ),
                    html.Figcaption(f"#{c.index} score {score}, {status}"),
                ],
                className=f"candidate candidate-{status.split(':')[0]}",
            )
        )
    return [
        html.P(
            f"decision {d} at step {decision.step}: {len(decision.candidates)} candidates, "
            f"{decision.resamples} resamples, {decision.latency_ms:.0f} ms"
        ),
        html.Div(cells, className="candidates"),
    ]


def _actions_figure(episode: Episode) -> go.Figure:
    actions = np.asarray(episode.actions)
    fig = go.Figure()
    for i, name in enumerate(["dx", "dy", "grip", "a3", "a4"][: actions.shape[1] if actions.ndim == 2 else 0]):
        fig.add_trace(go.Scatter(y=actions[:, i], name=name, mode="lines"))
    for decision in episode.decisions:
        fig.add_vline(x=decision.step, line_color="#ddd", line_width=1)
    fig.update_layout(xaxis_title="step (grey lines: decisions)")
    return fig


# -- helpers ----------------------------------------------------------------------------------------
def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _age_s(at: str) -> float:
    return datetime.now().astimezone().timestamp() - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    )


VIEWS = {"fleet": fleet, "rollout": rollout, "robots": robots_tasks, "health": health, "episodes": episodes}
