"""The demo's learning curve is drawn from its rounds: one point per round and arm, with its interval."""

from flows.learning_curve import draw_learning_curve


def test_the_learning_curve_is_a_png_of_every_round(tmp_path):
    rounds = [
        {
            "round": 0,
            "champion_version": "1",
            "decision": "baseline",
            "success_rate": 0.06,
            "success_ci95": [0.02, 0.16],
        },
        {
            "round": 1,
            "champion_version": "2",
            "decision": "promoted",
            "success_rate": 0.12,
            "success_ci95": [0.06, 0.24],
        },
        {
            "round": 2,
            "champion_version": "2",
            "decision": "rolled_back",
            "success_rate": 0.1,
            "success_ci95": [0.04, 0.21],
        },
        {"round": 3, "champion_version": "2", "decision": "kept", "success_rate": 0.14, "success_ci95": [0.07, 0.26]},
    ]
    path = draw_learning_curve({"fleet": rounds}, tmp_path / "out" / "learning_curve.png")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000

    control = [r | {"success_rate": 0.05, "success_ci95": [0.01, 0.15]} for r in rounds]
    both = draw_learning_curve({"fleet": rounds, "control": control}, tmp_path / "both.png")
    assert both.stat().st_size > path.stat().st_size  # the second arm is drawn
