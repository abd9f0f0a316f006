"""Every example in job_specs/ loads, validates and expands as its comments say, so docs
cannot drift from the code (or from train.py's flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.backends.base import Capabilities
from launcher.spec import catalog
from launcher.spec.jobspec import JobSpec

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "job_specs"

# file -> (experiments, instance type, gpus, backend)
EXPECTED = {
    "single.yaml": (1, "g4dn.xlarge", 1, "local"),
    "sweep.yaml": (6, "g4dn.xlarge", 1, "local"),
    "random_search.yaml": (8, "g5.xlarge", 1, "local"),
    "multi_gpu.yaml": (1, "g4dn.12xlarge", 4, "aws"),
    "spot.yaml": (2, "g4dn.xlarge", 1, "aws"),
    "grid.yaml": (4, "g4dn.xlarge", 1, "local"),
}
# what the command line in a file's comment gives besides the file (Grid's config has no script)
FLAGS = {"grid.yaml": {"script": "trainer/train.py"}}


def test_every_example_is_listed():
    assert sorted(p.name for p in SPECS.glob("*.y*ml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_loads_and_expands(name):
    n_exp, instance, gpus, backend = EXPECTED[name]
    text = (SPECS / name).read_text()
    assert text.startswith("#") and "launch run --spec job_specs/" + name in text
    spec = JobSpec.load(SPECS / name, workdir=REPO, **FLAGS.get(name, {}))
    assert (spec.instance_type, spec.gpus, spec.backend) == (instance, gpus, backend)
    exps = spec.experiments()
    assert len(exps) == n_exp
    assert len({tuple(e.args) for e in exps}) == n_exp  # distinct points
    assert catalog.estimate_cost(spec)["hour"] > 0
    # what the aws backend can do covers every example
    spec.check_capabilities(Capabilities(spot=True, multi_node=True, gpus=True))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_args_parse_with_train_py(name):
    cli_args = pytest.importorskip("trainer.cli_args")
    spec = JobSpec.load(SPECS / name, workdir=REPO, **FLAGS.get(name, {}))
    parser = cli_args.build_parser()
    for exp in spec.experiments():
        try:
            parsed = parser.parse_args(exp.args)
        except SystemExit:  # argparse already printed why
            pytest.fail(f"{name} {exp.id}: train.py rejects {exp.args}")
        for flag, value in exp.params.items():
            assert getattr(parsed, flag) == value


def test_examples_show_the_documented_features():
    sweep = JobSpec.load(SPECS / "sweep.yaml", workdir=REPO)
    assert {e.params["backbone"] for e in sweep.experiments()} == {"x3d_xs", "x3d_s"}
    rs = JobSpec.load(SPECS / "random_search.yaml", workdir=REPO)
    lrs = [e.params["lr"] for e in rs.experiments()]
    assert len(set(lrs)) == 8 and all(1e-4 <= v <= 1e-1 for v in lrs)
    assert lrs == [
        e.params["lr"]
        for e in JobSpec.load(SPECS / "random_search.yaml", workdir=REPO).experiments()
    ]
    spot = JobSpec.load(SPECS / "spot.yaml", workdir=REPO)
    assert (spot.spot, spot.retries, spot.max_runtime, spot.datastore) == (
        True,
        3,
        14400,
        "kinetics",
    )
    assert spot.env == {"OMP_NUM_THREADS": "4"}
