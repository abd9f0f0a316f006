"""Sweep expressions in script args -> experiments."""

from __future__ import annotations

import pytest

from launcher.errors import SpecError
from launcher.spec.sweep import (
    MAX_EXPERIMENTS,
    MAX_EXPERIMENTS_LIMIT,
    Experiment,
    expand,
    looks_like_sweep,
    render,
)


def test_no_sweep_gives_one_experiment_with_args_unchanged():
    args = ["--max_epochs", "5", "positional", "--name=x"]
    (exp,) = expand(args)
    assert exp == Experiment(id="exp-0", args=args, params={})


def test_grid_is_cartesian_product_in_arg_order():
    exps = expand(["--lr", "[0.01, 0.001]", "--backbone", "['x3d_xs', 'x3d_m']", "--e", "3"])
    assert [e.id for e in exps] == ["exp-0", "exp-1", "exp-2", "exp-3"]
    assert [e.params for e in exps] == [
        {"lr": 0.01, "backbone": "x3d_xs"},
        {"lr": 0.01, "backbone": "x3d_m"},
        {"lr": 0.001, "backbone": "x3d_xs"},
        {"lr": 0.001, "backbone": "x3d_m"},
    ]
    assert exps[3].args == ["--lr", "0.001", "--backbone", "x3d_m", "--e", "3"]


def test_equals_form_and_single_dash_flags():
    exps = expand(["--lr=[0.1,0.2]", "-b", "[1, 2]"])
    assert [e.args for e in exps] == [
        ["--lr=0.1", "-b", "1"],
        ["--lr=0.1", "-b", "2"],
        ["--lr=0.2", "-b", "1"],
        ["--lr=0.2", "-b", "2"],
    ]
    assert exps[0].params == {"lr": 0.1, "b": 1}


def test_booleans_render_as_python_words():
    exps = expand(["--pretrained", "[True, False]"])
    assert [e.args[1] for e in exps] == ["True", "False"]
    assert [e.params["pretrained"] for e in exps] == [True, False]


def test_floats_render_as_repr():
    assert render(1e-05) == "1e-05"
    assert render(0.1) == "0.1"
    assert render(3) == "3"
    assert render("x3d_m") == "x3d_m"


def test_range_sweep():
    exps = expand(["--epochs", "range(1, 10, 2)"])
    assert [e.params["epochs"] for e in exps] == [1, 3, 5, 7, 9]
    assert [e.args[1] for e in exps] == ["1", "3", "5", "7", "9"]
    assert len(expand(["--n", "range(3)"])) == 3
    assert [e.params["n"] for e in expand(["--n", "range(3, 0, -1)"])] == [3, 2, 1]


@pytest.mark.parametrize(
    "expr,lo,hi,kind",
    [
        ("uniform(1e-4, 1e-1, 5)", 1e-4, 1e-1, float),
        ("loguniform(1e-5, 1e-1, 4)", 1e-5, 1e-1, float),
        ("randint(1, 100, 3)", 1, 100, int),
    ],
)
def test_distributions_in_grid_draw_n_seeded_values(expr, lo, hi, kind):
    n = int(expr.rstrip(")").split(",")[-1])
    exps = expand(["--x", expr], seed=7)
    values = [e.params["x"] for e in exps]
    assert len(values) == n
    assert all(isinstance(v, kind) and lo <= v <= hi for v in values)
    assert len(set(values)) > 1
    assert values == [e.params["x"] for e in expand(["--x", expr], seed=7)]
    assert values != [e.params["x"] for e in expand(["--x", expr], seed=8)]


def test_loguniform_spreads_over_decades():
    values = [e.params["lr"] for e in expand(["--lr", "loguniform(1e-6, 1e-1, 200)"])]
    # uniform in log space: about one fifth of draws per decade, so many below 1e-3
    assert sum(v < 1e-3 for v in values) > 80


def test_random_search_draws_trials_reproducibly():
    args = ["--lr", "uniform(0.001, 0.1, 2)", "--bb", "['a', 'b', 'c']", "--e", "range(1, 4)"]
    exps = expand(args, "random_search", trials=20, seed=3)
    assert len(exps) == 20
    assert [e.id for e in exps][-1] == "exp-19"
    lrs = [e.params["lr"] for e in exps]
    assert len(set(lrs)) == 20 and all(0.001 <= v <= 0.1 for v in lrs)
    assert {e.params["bb"] for e in exps} <= {"a", "b", "c"}
    assert len({e.params["bb"] for e in exps}) > 1
    assert {e.params["e"] for e in exps} <= {1, 2, 3}
    again = expand(args, "random_search", trials=20, seed=3)
    assert [e.to_dict() for e in exps] == [e.to_dict() for e in again]
    other = expand(args, "random_search", trials=20, seed=4)
    assert [e.params for e in exps] != [e.params for e in other]


def test_shell_metacharacters_and_positionals_pass_through_byte_for_byte():
    hostile = ["--cmd", "a; rm -rf / && $(x) `y` | z > f", "[1, 2]", "--q", "'\"", "--x", "f(y)"]
    (exp,) = expand(hostile)
    assert exp.args == hostile
    # a sweep-looking positional (no flag right before it) is not swept
    assert len(expand(["[1, 2]"])) == 1


def test_flag_value_that_is_a_flag_is_not_swept():
    exps = expand(["--verbose", "--lr", "[1, 2]"])
    assert [e.params for e in exps] == [{"lr": 1}, {"lr": 2}]


def test_experiment_round_trips_through_dict():
    exp = expand(["--lr", "[0.5]"])[0]
    assert Experiment.from_dict(exp.to_dict()) == exp
    assert exp.to_dict() == {"id": "exp-0", "args": ["--lr", "0.5"], "params": {"lr": 0.5}}


@pytest.mark.parametrize(
    "value,expected",
    [
        ("[0.01, 0.001]", True),
        (" [1] ", True),
        ("range(1, 3)", True),
        ("range()", True),
        ("normal(0, 1, 3)", True),
        ("unifrom(1e-4, 1e-1, 5)", True),
        ("f(x)", False),
        ("reset()", False),
        ("0.01", False),
        ("x3d_m", False),
        ("[unterminated", True),
        ("uniform(1e-4, 1e-1, 5", True),
        ("range(1, 5", True),
        ("normal(0, 1, 3", True),
        ("f(x", False),
        ("x[1]", False),
    ],
)
def test_looks_like_sweep(value, expected):
    assert looks_like_sweep(value) is expected


@pytest.mark.parametrize(
    "value,why",
    [
        ("[0.01, ", "not a valid list literal"),
        ("[]", "at least one value"),
        ("[[1], 2]", "list items must be"),
        ("[__import__('os')]", "not a valid list literal"),
        ("[1e999]", "finite"),
        ("uniform(1e-4, 1e-1, 5", "not a valid call (unclosed '(')"),
        ("loguniform(1e-5, 1e-1", "unclosed"),
        ("range(1, 5)x", "not a valid call"),
        ("uniform(-1e308, 1e308, 3)", "overflows to inf; values must be finite"),
        ("uniform(-1e308, 1e308)", "values must be finite"),
        ("uniform(1, 1e999, 3)", "arguments must be finite"),
        ("randint(1, 99999999999999999999, 3)", "within +-2**63"),
        ("range(99999999999999999999)", "within +-2**63"),
        ("uniform(1)", "takes 2 or 3 numbers"),
        ("uniform(1, 2, 3, 4)", "takes 2 or 3 numbers"),
        ("uniform(2, 1, 3)", "low must be less than high"),
        ("uniform(1, 2, 0)", "n must be an integer >= 1"),
        ("uniform(1, 2, 2.5)", "n must be an integer"),
        ("loguniform(0, 1, 3)", "low > 0"),
        ("randint(1.5, 3, 2)", "integer low and high"),
        ("range()", "range takes 1 to 3 integers"),
        ("range(1.5)", "range takes 1 to 3 integers"),
        ("range(1, 5, 0)", "step must not be 0"),
        ("range(5, 1)", "range is empty"),
        ("normal(0, 1, 3)", "unknown function 'normal';"),
        ("unifrom(1, 2, 3)", "did you mean uniform"),
        ("uniform(low=1, high=2, n=3)", "positional numeric"),
        ("uniform(a, 2, 3)", "numeric literals"),
        ("range(__import__('os').getpid())", "numeric literals"),
    ],
)
def test_malformed_sweeps_name_the_arg_and_the_allowed_forms(value, why):
    with pytest.raises(SpecError) as e:
        expand(["--lr", value])
    msg = str(e.value)
    assert "--lr" in msg and why in msg and "allowed forms" in msg
    assert "\n" not in msg


def test_strategy_errors():
    with pytest.raises(SpecError, match="unknown strategy 'bayes'"):
        expand([], "bayes")
    with pytest.raises(SpecError, match="trials only applies to strategy random_search"):
        expand(["--lr", "[1, 2]"], "grid_search", trials=3)
    with pytest.raises(SpecError, match="needs trials >= 1"):
        expand(["--lr", "[1, 2]"], "random_search")
    with pytest.raises(SpecError, match="needs at least one sweep"):
        expand(["--lr", "1"], "random_search", trials=2)


def test_swept_twice_and_too_many_points():
    with pytest.raises(SpecError, match="--lr is swept twice"):
        expand(["--lr", "[1, 2]", "--lr=[3]"])
    with pytest.raises(SpecError, match="gives 1024 experiments"):
        expand(["--a", "range(32)", "--b", "range(32)"])


def test_random_search_over_finite_space_never_repeats_a_point():
    args = ["--a", "[1, 2, 3]", "--b", "range(4)", "--c", "['x', 'y']"]
    exps = expand(args, "random_search", trials=24, seed=5)
    points = {(e.params["a"], e.params["b"], e.params["c"]) for e in exps}
    assert len(points) == 24  # the whole 3 x 4 x 2 space, each point once
    few = expand(args, "random_search", trials=5, seed=5)
    assert len({tuple(e.args) for e in few}) == 5
    assert [e.params for e in few] == [e.params for e in expand(args, "random_search", 5, 5)]
    with pytest.raises(SpecError, match="trials 25 is more than the 24 points of the space"):
        expand(args, "random_search", trials=25)


@pytest.mark.parametrize(
    "value", ["uniform(1e-4, 1e-1)", "loguniform(1e-5, 1e-1)", "randint(1, 9)"]
)
def test_distributions_without_a_count_need_random_search(value):
    with pytest.raises(SpecError) as e:
        expand(["--lr", value])
    msg = str(e.value)
    assert f"bad sweep --lr {value!r}: grid_search needs a count" in msg
    assert "random_search" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "value,lo,hi,kind",
    [
        ("uniform(1e-4, 1e-1)", 1e-4, 1e-1, float),
        ("loguniform(1e-5, 1e-1)", 1e-5, 1e-1, float),
        ("randint(1, 1000)", 1, 1000, int),
    ],
)
def test_random_search_draws_a_countless_distribution_afresh_per_trial(value, lo, hi, kind):
    exps = expand(["--x", value, "--bb", "['a', 'b']"], "random_search", trials=50, seed=11)
    values = [e.params["x"] for e in exps]
    assert len(values) == 50 and all(isinstance(v, kind) and lo <= v <= hi for v in values)
    assert len(set(values)) > 40  # a fresh draw per trial, not a few values reused
    assert [e.args[1] for e in exps] == [render(v) for v in values]
    again = expand(["--x", value, "--bb", "['a', 'b']"], "random_search", trials=50, seed=11)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in exps]
    other = expand(["--x", value, "--bb", "['a', 'b']"], "random_search", trials=50, seed=12)
    assert [e.params for e in other] != [e.params for e in exps]


def test_the_experiment_cap_names_the_flag_that_lifts_it():
    for args, kw in [
        (["--n", "range(1001)"], {}),
        (["--a", "range(32)", "--b", "range(32)"], {}),
        (["--lr", f"uniform(1, 2, {MAX_EXPERIMENTS + 1})"], {}),
        (["--lr", "[1, 2]"], {"strategy": "random_search", "trials": MAX_EXPERIMENTS + 1}),
    ]:
        with pytest.raises(SpecError) as e:
            expand(args, **kw)
        msg = str(e.value)
        assert f"more than the {MAX_EXPERIMENTS} allowed per run" in msg
        assert "pass --max-experiments" in msg and "\n" not in msg
    with pytest.raises(SpecError, match="pass --max-experiments 1024 "):
        expand(["--a", "range(32)", "--b", "range(32)"])
    with pytest.raises(SpecError, match=f"more than the {MAX_EXPERIMENTS_LIMIT} a run can hold"):
        expand(["--n", f"range({MAX_EXPERIMENTS_LIMIT + 1})"], max_experiments=10**9)
    with pytest.raises(SpecError, match="more than the 10 allowed"):
        expand(["--n", "range(11)"], max_experiments=10)


def test_max_experiments_lifts_the_cap_and_10000_expand_quickly():

    exps = expand(["--lr", "range(10000)", "--e", "3"], max_experiments=10_000)
    assert len(exps) == 10_000 and exps[-1].id == "exp-9999"
    assert exps[-1].args == ["--lr", "9999", "--e", "3"]
    drawn = expand(["--lr", "loguniform(1e-5, 1e-1)"], "random_search", 5000, 1,
                   max_experiments=5000)  # fmt: skip
    assert len(drawn) == 5000
    with pytest.raises(SpecError, match="pass --max-experiments 10001"):
        expand(["--lr", "range(10001)"], max_experiments=10_000)
