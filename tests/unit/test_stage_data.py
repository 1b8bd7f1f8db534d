"""Training-stage data: each stage has what the design says it has, reproducibly."""

import numpy as np

from sim.tabletop import TabletopEnv, Task
from worldmodel.captions import ObjectTrack, SceneDescription, TemplateCaptioner
from worldmodel.stage_data import human_pov_clips, internet_clips, load_clips, robot_logs, save_clips, task_points


def test_caption_upsampling_names_objects_places_and_motion_deterministically():
    scene = SceneDescription(
        [ObjectTrack("red", (0.1, 0.9), (0.9, 0.9)), ObjectTrack("orange", (0.5, 0.5), (0.5, 0.5))],
        actor="robot gripper",
    )
    detailed = TemplateCaptioner().upsample("push the red block to the right", scene)
    assert detailed == TemplateCaptioner().upsample("push the red block to the right", scene)
    assert "a red block at the bottom left" in detailed and "an orange block at the centre" in detailed
    assert "The red block moves right, ending at the bottom right." in detailed
    assert "orange block moves" not in detailed  # it stayed still


def test_internet_video_has_no_actions_and_varied_dynamics():
    clips = internet_clips(40, seed=0, size=32, frames=12)
    assert all(c.actions is None and c.frames.shape == (12, 32, 32, 3) for c in clips)
    assert any("falls over" in c.caption for c in clips) and any("pans" in c.detailed_caption for c in clips)
    assert [c.caption for c in internet_clips(5, seed=0, size=32)] == [c.caption for c in clips[:5]]


def test_human_pov_shows_the_tasks_without_actions_from_other_viewpoints():
    clips = human_pov_clips(6, seed=0, size=32)
    assert all(c.actions is None and c.success is None and c.task_id for c in clips)
    assert all("human hand" in c.detailed_caption for c in clips)


def test_robot_logs_carry_actions_and_success_and_differ_from_human_scenes():
    robot, human = robot_logs(6, seed=0, size=32), human_pov_clips(6, seed=0, size=32)
    assert all(len(c.actions) == len(c.frames) - 1 and isinstance(c.success, bool) for c in robot)
    assert [c.task_id for c in robot] != [c.task_id for c in human] or not all(
        np.array_equal(a.frames[0], b.frames[0]) for a, b in zip(robot, human, strict=True)
    )


def test_clips_round_trip_through_disk_without_pickle(tmp_path):
    clips = robot_logs(4, seed=1, size=32)
    save_clips(clips, tmp_path)
    loaded = load_clips(tmp_path)
    for a, b in zip(clips, loaded, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.points, b.points)
        assert (a.caption, a.detailed_caption, a.success, a.task_id) == (
            b.caption,
            b.detailed_caption,
            b.success,
            b.task_id,
        )


def test_grounding_points_are_the_object_and_where_it_must_go():
    env = TabletopEnv()
    for task_id, goal in (("reach-red", "red"), ("stack-red-on-blue", "blue"), ("push-red-left", (0.15, 0.5))):
        env.reset(seed=3, options={"task": task_id})
        points = task_points(Task.parse(task_id), env.state_vector()[None])[0]
        assert np.allclose(points[0], env.scene.blocks[env._index("red")].pos)
        expected = env.scene.blocks[env._index(goal)].pos if isinstance(goal, str) else goal
        assert np.allclose(points[1], expected)


def test_only_robot_logs_carry_grounding_points():
    assert all(c.points.shape == (len(c.frames), 2, 2) for c in robot_logs(3, seed=0, size=32))
    assert all(c.points is None for c in human_pov_clips(3, seed=0, size=32) + internet_clips(3, seed=0, size=32))
