"""Operator phrasings: the same tasks in words that no training caption uses."""

from sim.phrasings import OPERATOR_PHRASINGS, operator_instruction
from sim.tabletop import ALL_TASKS
from worldmodel.evaluate import evaluate
from worldmodel.planner_config import PlannerConfig
from worldmodel.stage_data import human_pov_clips, internet_clips, robot_logs
from worldmodel.text_encoder import build_vocab, tokenize


def test_operator_phrasings_name_the_task_and_are_never_trained_on():
    clips = internet_clips(40, 0, size=32) + human_pov_clips(20, 0, size=32) + robot_logs(20, 0, size=32)
    captions = {text for c in clips for text in (c.caption, c.detailed_caption)}
    vocab = set(build_vocab(list(captions) + [t.instruction for t in ALL_TASKS]))
    for task in ALL_TASKS:
        for seed in range(len(OPERATOR_PHRASINGS[task.kind])):
            said = operator_instruction(task, seed)
            assert said not in captions and said != task.instruction
            words = set(tokenize(said))
            assert set(task.colours) <= words  # the task's content is all there
            assert words - vocab, f"{said!r} uses only training words"  # and some of its words never trained


def test_an_evaluation_reports_how_often_the_policy_read_its_tasks_own_instruction(tiny_policy_dir):
    in_its_words = evaluate(tiny_policy_dir, episodes=1, workers=1, phrasing="simulator")
    assert in_its_words.understood_rate == 1.0
    ungrounded = PlannerConfig(ground_instructions=False)
    in_the_operators = evaluate(tiny_policy_dir, episodes=1, workers=1, phrasing="operator", planner_config=ungrounded)
    assert in_the_operators.understood_rate == 0.0  # every operator phrasing has a word it never trained on
