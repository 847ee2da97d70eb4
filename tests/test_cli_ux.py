"""The command line explains itself: version, descriptions and help everywhere, one name per concept."""

from __future__ import annotations

import argparse

import pytest

from urnet_core.cli import get_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("urnet 0.")


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_command_has_a_description_and_every_flag_help():
    parser = get_parser()
    commands = dict(_subparsers(parser))
    assert {"data", "train", "features", "weights", "study"} <= set(commands)
    for name, sub in commands.items():
        assert sub.description and len(sub.description) > 30, f"urnet {name} has no description"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"urnet {name} {action.option_strings or action.dest} has no help"


def test_smoke_is_the_scale_shorthand_everywhere():
    parser = get_parser()
    for argv in (["train", "--manifest", "m", "--run-dir", "r"], ["features", "--manifest", "m", "--checkpoint", "c",
                                                                    "--out", "o"], ["data", "describe", "m"]):
        assert parser.parse_args([*argv, "--smoke"]).scale == parser.parse_args([*argv, "--scale", "smoke"]).scale == "smoke"


def test_sample_weights_and_its_deprecated_spelling(capsys):
    from urnet_core.cli.train import sample_weights_path

    parser = get_parser()
    base = ["train", "--manifest", "m", "--run-dir", "r"]
    assert sample_weights_path(parser.parse_args([*base, "--sample-weights", "w.npy"])) == "w.npy"
    assert capsys.readouterr().err == ""
    assert sample_weights_path(parser.parse_args([*base, "--weights", "w.npy"])) == "w.npy"
    assert "--weights is deprecated, use --sample-weights" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only"):
        sample_weights_path(parser.parse_args([*base, "--weights", "a", "--sample-weights", "b"]))


def test_train_config_in_yaml_or_json_or_a_study_config(tmp_path):
    from urnet_core.cli.train import _config

    parser = get_parser()
    for name, text in (("t.yaml", "epochs: 2\nlr: 0.01\n"), ("t.json", '{"epochs": 2, "lr": 0.01}'),
                       ("study.yaml", "training:\n  epochs: 2\n  lr: 0.01\n")):
        (tmp_path / name).write_text(text)
        config = _config(parser.parse_args(["train", "--manifest", "m", "--run-dir", "r", "--config",
                                            str(tmp_path / name)]))
        assert (config.epochs, config.lr) == (2, 0.01), name
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    assert main(["train", "--manifest", "m", "--run-dir", "r", "--config", str(tmp_path / "bad.yaml")]) == 1


def test_study_only_with_an_unknown_notebook_is_one_line(capsys, tmp_path):
    assert main(["study", "--smoke", "--only", "99", "--run-dir", str(tmp_path / "r"), "--reports",
                 str(tmp_path / "rep")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--only ['99'] matches no notebook" in err
    assert not (tmp_path / "rep" / "index.html").exists()
