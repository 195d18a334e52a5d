"""The tools' CPU thread policy (fsn_model/threads.py): its logic, not its timings."""
import argparse

import pytest

from fsn_model import threads


@pytest.mark.parametrize("cores,load,want", [
    (2, 0.0, 2), (2, 0.3, 2),  # an idle machine keeps one thread per core
    (2, 0.8, 1), (2, 1.2, 1),  # one core busy with another process
    (2, 2.0, 1), (2, 9.5, 1),  # every core busy: one thread, never zero
    (8, 3.1, 5), (1, 0.0, 1), (4, -1.0, 4),
])
def test_default_threads_uses_the_cores_other_processes_leave_idle(cores, load, want):
    assert threads.default_threads(cores, load) == want


def test_choose_threads_order_flag_then_omp_num_threads_then_load():
    assert threads.choose_threads(3, {"OMP_NUM_THREADS": "1"}, cores=2, load=0.0) == 3
    assert threads.choose_threads(None, {"OMP_NUM_THREADS": "1"}, cores=2, load=0.0) is None  # torch follows it
    assert threads.choose_threads(None, {}, cores=2, load=0.0) == 2
    assert threads.choose_threads(None, {}, cores=2, load=2.0) == 1
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="--threads must be an integer >= 1"):
            threads.choose_threads(bad, {}, cores=2, load=0.0)


def test_wait_policy_is_passive_unless_chosen_or_too_late():
    env = {}
    assert threads.configure_wait_policy(env, modules={}) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100"}, {"KMP_BLOCKTIME": "0"}):
        env = dict(chosen)
        assert not threads.configure_wait_policy(env, modules={}) and env == chosen
    env = {}
    assert not threads.configure_wait_policy(env, modules={"torch": object()}) and env == {}


def test_a_fresh_fsn_model_import_sets_the_passive_wait_policy_before_torch():
    import subprocess
    import sys

    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); import fsn_model, sys; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in threads.WAIT_POLICY_VARS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "PASSIVE"


@pytest.mark.parametrize("module", ["fsn_model.train", "fsn_model.evaluate", "fsn_model.generate",
                                    "fsn_model.copy_depth", "fsn_studies.compare", "fsn_studies.sweep"])
def test_every_tool_takes_threads_and_refuses_a_bad_count(module, capsys):
    import importlib

    mod = importlib.import_module(module)
    argv = ["x.pt"] if module.split(".")[1] in ("evaluate", "generate", "copy_depth") else []
    with pytest.raises(SystemExit) as exit_:
        mod.main(argv + ["--threads", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--threads must be an integer >= 1" in err and len(err.strip().splitlines()) == 1


def test_add_threads_flag_defaults_to_none():
    p = argparse.ArgumentParser()
    threads.add_threads_flag(p)
    assert p.parse_args([]).threads is None and p.parse_args(["--threads", "2"]).threads == 2
