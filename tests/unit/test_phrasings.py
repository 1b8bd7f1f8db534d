"""Operator phrasings: the same tasks in words that no training caption uses."""

from sim.phrasings import OPERATOR_PHRASINGS, operator_instruction
from sim.tabletop import ALL_TASKS
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
