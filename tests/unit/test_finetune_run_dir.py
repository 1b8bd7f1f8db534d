"""A fine-tuning run directory resumes only the run it holds, and one process at a time."""

from __future__ import annotations

import pytest

from learner.finetune import FinetuneFailed, FinetuneJob, prepare_run, run_lock


def _tree(root, name: str, content: str):
    (root / name).mkdir(parents=True)
    (root / name / "weights.safetensors").write_text(content)
    return root / name


def test_the_same_parent_and_data_resume_and_another_parent_is_refused(tmp_path):
    parent, data = _tree(tmp_path, "champion-7", "seven"), _tree(tmp_path, "data", "episodes")
    run = prepare_run(tmp_path / "run", parent, data, FinetuneJob())
    (run / "checkpoints").mkdir()  # training got somewhere
    assert prepare_run(tmp_path / "run", parent, data, FinetuneJob(steps=400)) == run  # resumable

    new_champion = _tree(tmp_path, "champion-8", "eight")
    with pytest.raises(FinetuneFailed, match="another parent or other data"):
        prepare_run(tmp_path / "run", new_champion, data, FinetuneJob())
    assert (run / "parent" / "weights.safetensors").read_text() == "seven"  # untouched
    other_data = _tree(tmp_path, "data-2", "more episodes")
    with pytest.raises(FinetuneFailed, match="another parent or other data"):
        prepare_run(tmp_path / "run", parent, other_data, FinetuneJob())


def test_a_directory_that_records_no_run_is_not_adopted(tmp_path):
    parent, data = _tree(tmp_path, "parent", "p"), _tree(tmp_path, "data", "d")
    (tmp_path / "run" / "parent").mkdir(parents=True)  # left by something else
    with pytest.raises(FinetuneFailed, match="records no run"):
        prepare_run(tmp_path / "run", parent, data, FinetuneJob())


def test_a_second_process_on_the_same_directory_is_refused(tmp_path):
    parent, data = _tree(tmp_path, "parent", "p"), _tree(tmp_path, "data", "d")
    run = prepare_run(tmp_path / "run", parent, data, FinetuneJob())
    with run_lock(run), pytest.raises(FinetuneFailed, match="in use by another process"):
        prepare_run(run, parent, data, FinetuneJob())
