"""`python -m <module>` of a command line that issue 27 moved to sdft/cli/ stops with the new command, not silently."""

import runpy

import pytest

MOVED = {
    "sdft.prep.check": "sdft data check",
    "sdft.toy.export": "sdft toy export",
    "sdft.toy.masks": "sdft toy masks",
    "sdft.toy.study": "sdft toy study",
    "sdft.toy.train_vae": "sdft toy vae",
    "sdft.toy.world": "sdft toy world",
    "sdft.evaluation.compare": "sdft eval compare",
}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_old_module_command_names_its_replacement(module):
    with pytest.raises(SystemExit) as stop:
        runpy.run_module(module, run_name="__main__")
    assert f"`{MOVED[module]}`" in str(stop.value.code)
    assert module in str(stop.value.code)


@pytest.mark.parametrize("command", sorted(set(MOVED.values())))
def test_every_replacement_is_a_real_command(command, capsys):
    from sdft.cli import build_parser

    with pytest.raises(SystemExit) as stop:  # argparse: 0 after printing a known command's help, 2 for an unknown one
        build_parser().parse_args([*command.split()[1:], "--help"])
    assert stop.value.code == 0
    assert command.split()[-1] in capsys.readouterr().out
