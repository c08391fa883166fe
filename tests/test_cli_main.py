"""``fastxai`` main: every expected error is one stderr line and exit code 2 (issue 20)."""

import pytest
from PIL import UnidentifiedImageError

from fastxai_jax import cli
from fastxai_jax.cli import train_target


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("lr must be positive;\n got -1"), "error: lr must be positive; got -1"),
        (FileNotFoundError(2, "No such file or directory", "x.png"), "FileNotFoundError: "),
        (NotADirectoryError("workdir a/b is not a directory"), "NotADirectoryError: workdir"),
        (PermissionError(13, "Permission denied", "/ro"), "PermissionError: [Errno 13]"),
        (IsADirectoryError(21, "Is a directory", "out"), "IsADirectoryError: "),
        (UnidentifiedImageError("cannot identify image file 'a.png'"), "cannot identify image"),
        (FloatingPointError("non-finite loss at step 7"), "training diverged: non-finite loss"),
    ],
)
def test_main_turns_expected_errors_into_one_line(monkeypatch, capsys, error, expected):
    def run(args):
        raise error

    monkeypatch.setattr(train_target, "run", run)
    assert cli.main(["train-target"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("fastxai train-target: error: ") and expected in err, err


def test_main_keeps_the_traceback_of_a_bug(monkeypatch):
    def run(args):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(train_target, "run", run)
    with pytest.raises(KeyError):
        cli.main(["train-target"])


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train-target", "--steps", "many"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "--steps: invalid int value: 'many'" in err
