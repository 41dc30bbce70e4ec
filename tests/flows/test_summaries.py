"""The run summary's params line: what undoes a `-S` change depends on whether the run committed it."""

from flows.summaries import format_summary

RUN = {"outcome": "Promoted", "stages": [], "repo": "/project", "params_changed": ["train.epochs: 2 -> 3"]}


def test_a_committed_change_says_how_to_get_the_value_before_it_back():
    text = format_summary({**RUN, "committed": '3f2a1b2 "imgpipe run: Promoted v1 (macro-F1 0.9100)"'})
    assert ("train.epochs: 2 -> 3  (committed with the run's dvc.lock; `git checkout 3f2a1b2~1 -- params.yaml` "
            "brings back the value before it)") in text


def test_an_uncommitted_change_is_undone_by_checking_out_params_yaml():
    for committed in ("", "not committed: the git index holds staged changes"):
        text = format_summary({**RUN, "committed": committed})
        assert "train.epochs: 2 -> 3  (kept; `git checkout params.yaml` undoes it)" in text
