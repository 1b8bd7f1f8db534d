"""Instructions in an operator's own words: phrasings that no training caption ever uses.

The simulator phrases every task one way ("put the red block on the blue block"), and every
caption the world model trains on is built from those words. An operator types what comes to mind.
These templates are written once and kept out of training, so `fleet eval --phrasing operator`
measures whether the policy understands the task rather than the simulator's wording; the task,
its seed and its success check stay the same.
"""

from __future__ import annotations

from sim.tabletop import Task

OPERATOR_PHRASINGS: dict[str, tuple[str, ...]] = {
    "reach": (
        "move your gripper to the {colour} cube",
        "go and touch the {colour} cube",
        "hover over the {colour} one",
    ),
    "push": (
        "slide the {colour} cube over to the {target} side",
        "shove the {colour} cube towards the {target}",
        "nudge the {colour} cube to the {target} edge of the table",
    ),
    "stack": (
        "place the {colour} cube onto the {target} one",
        "set the {colour} cube on top of the {target} cube",
        "stack the {colour} cube onto the {target} cube",
    ),
}


def operator_instruction(task: Task, seed: int) -> str:
    """One of the task's operator phrasings, chosen by the episode's seed."""
    templates = OPERATOR_PHRASINGS[task.kind]
    return templates[seed % len(templates)].format(colour=task.colour, target=task.target)
