"""The command line's own manners: --version, the usage a wrong flag prints, help text as printed."""

from __future__ import annotations

import pytest

from windtunnel import __version__
from windtunnel.cli import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"windtunnel {__version__}"


@pytest.mark.parametrize("argv, usage", [
    (["train", "proxies/xs.yaml", "--bogus"], "usage: windtunnel train "),
    (["data", "prepare", "x.txt", "--out", "d", "--bogus"], "usage: windtunnel data prepare "),
    (["check", "transfer", "runs/x", "--bogus"], "usage: windtunnel check transfer "),
    (["--bogus"], "usage: windtunnel [-h]"),
])
def test_a_wrong_flag_prints_the_usage_of_its_subcommand(capsys, argv, usage):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("command", [["check", "transfer"], ["check", "horizon"]])
def test_help_prints_a_single_percent_sign(capsys, command):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert "95% " in out and "%%" not in out


def test_config_keys_lists_every_field_with_type_default_and_doc(capsys):
    import dataclasses

    from windtunnel.config_keys import config_keys
    from windtunnel.schema import SECTIONS
    keys = config_keys()
    assert [k.key for k in keys] == [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    assert all(k.doc for k in keys), [k.key for k in keys if not k.doc]  # every field is documented
    lr = next(k for k in keys if k.key == "train.lr")
    assert (lr.type, lr.default) == ("float", "0.01") and lr.doc.startswith("Peak learning rate")
    assert main(["config", "keys", "model"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model.d_model  int = 256\n    Width: the residual stream size.")
    assert "model.parametrization  Literal['mup', 'sp'] = mup" in out and "train.lr" not in out
    assert main(["config", "keys", "modle"]) == 2
    assert "unknown section 'modle' (did you mean 'model'?)" in capsys.readouterr().err
