"""JobSpec: YAML and flags -> one strictly validated job."""

from __future__ import annotations

import pytest
import yaml

from launcher.backends.base import Capabilities
from launcher.errors import SpecError
from launcher.spec.jobspec import JobSpec, field_help


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.py").write_text("")
    return tmp_path


def write(workdir, data, name="spec.yaml"):
    p = workdir / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def load(workdir, path=None, **kw):
    return JobSpec.load(path, workdir=workdir, **kw)


def test_defaults(workdir):
    spec = load(workdir, script="train.py")
    assert spec.backend == "local"
    assert spec.instance_type == "g4dn.xlarge"
    assert spec.gpus == 1  # the instance type's GPU count
    assert (spec.disk_size, spec.max_nodes, spec.retries, spec.seed) == (100, 1, 0, 0)
    assert spec.strategy == "grid_search" and spec.trials is None
    assert spec.spot is False and spec.env == {} and spec.max_runtime is None
    assert [e.id for e in spec.experiments()] == ["exp-0"]


def test_gpus_default_follows_instance_and_zero_is_allowed(workdir):
    assert load(workdir, script="train.py", instance_type="g4dn.12xlarge").gpus == 4
    assert load(workdir, script="train.py", instance_type="t3.large").gpus == 0
    assert load(workdir, script="train.py", instance_type="g4dn.12xlarge", gpus=0).gpus == 0


def test_yaml_with_flags_overriding(workdir):
    p = write(
        workdir,
        {
            "script": "train.py",
            "script_args": ["--lr", "[0.1, 0.01]"],
            "instance_type": "g5.xlarge",
            "max_nodes": 2,
            "env": {"OMP_NUM_THREADS": 4, "MODE": "fast"},
        },
    )
    spec = load(workdir, p, max_nodes=3, instance_type=None, gpus=None, script_args=())
    assert spec.instance_type == "g5.xlarge"  # None = flag not given
    assert spec.max_nodes == 3
    assert spec.script_args == ["--lr", "[0.1, 0.01]"]  # empty args without script: not given
    assert spec.env == {"OMP_NUM_THREADS": "4", "MODE": "fast"}
    assert len(spec.experiments()) == 2
    flags = load(workdir, p, script="sub/t.py", script_args=("--x", "1"))
    assert (flags.script, flags.script_args) == ("sub/t.py", ["--x", "1"])


def test_grid_aliases_and_dashes(workdir):
    p = write(
        workdir,
        "script: train.py\ninstance: p3.8xlarge\nuse_spot: true\ndatastore_name: kin\n"
        "datastore_version: 2\ndisk-size: 200\nmax-nodes: 2\ndatastore_mount_dir: /opt/data\n",
    )
    spec = load(workdir, p)
    assert (spec.instance_type, spec.spot, spec.datastore, spec.datastore_version) == (
        "p3.8xlarge",
        True,
        "kin",
        2,
    )
    assert (spec.disk_size, spec.max_nodes, spec.datastore_mount_dir) == (200, 2, "/opt/data")


def test_script_args_as_one_string_is_split_without_a_shell(workdir):
    p = write(workdir, "script: train.py\nscript_args: --lr \"[0.1, 0.2]\" --tag 'a;b $(x)'\n")
    spec = load(workdir, p)
    assert spec.script_args == ["--lr", "[0.1, 0.2]", "--tag", "a;b $(x)"]
    assert spec.experiments()[1].args == ["--lr", "0.2", "--tag", "a;b $(x)"]


def test_datastore_name_colon_version(workdir):
    spec = load(workdir, script="train.py", datastore="kinetics:3")
    assert (spec.datastore, spec.datastore_version) == ("kinetics", 3)
    assert load(workdir, script="train.py", datastore="kinetics").datastore_version is None
    same = load(workdir, script="train.py", datastore="kinetics:3", datastore_version=3)
    assert same.datastore_version == 3


def test_round_trip_through_dict(workdir):
    spec = load(
        workdir,
        script="train.py",
        script_args=["--lr", "loguniform(1e-5, 1e-1, 1)", "--bb", "['a', 'b']"],
        strategy="random_search",
        trials=5,
        seed=11,
        max_runtime="2h",
        datastore="d:1",
        name="my-run",
    )
    data = spec.to_dict()
    assert data["max_runtime"] == 7200 and data["gpus"] == 1
    back = JobSpec.from_dict(data).validate()
    assert back == spec
    assert [e.to_dict() for e in back.experiments()] == [e.to_dict() for e in spec.experiments()]


def test_max_runtime_forms(workdir):
    for given, seconds in [(90, 90), ("90", 90), ("90m", 5400), ("1.5h", 5400), ("1d", 86400)]:
        assert load(workdir, script="train.py", max_runtime=given).max_runtime == seconds


def test_every_field_is_documented():
    helps = field_help()
    assert set(helps) >= {"script", "gpus", "datastore", "strategy", "max_runtime", "env"}
    assert all(len(h) > 10 for h in helps.values())


def test_check_capabilities(workdir):
    spot = load(workdir, script="train.py", spot=True)
    with pytest.raises(SpecError, match="backend 'local' cannot run spot instances"):
        spot.check_capabilities(Capabilities(spot=False))
    spot.check_capabilities(Capabilities(spot=True))
    multi = load(workdir, script="train.py", max_nodes=2)
    with pytest.raises(SpecError, match="runs one node only; --max_nodes 2 needs 1"):
        multi.check_capabilities(Capabilities(multi_node=False))
    with pytest.raises(SpecError, match="has no GPUs; use --gpus 0"):
        load(workdir, script="train.py").check_capabilities(Capabilities(gpus=False))
    load(workdir, script="train.py", gpus=0).check_capabilities(Capabilities(gpus=False))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"instance_type": "g4dn.xlarge", "gpus": 4},
            "g4dn.xlarge has 1 GPU; --gpus 4 needs one of: g4dn.12xlarge",
        ),
        ({"instance_type": "g4dn.12xlarge", "gpus": 16}, "--gpus 16 no type has that many"),
        (
            {"instance_type": "g4dn.xlarg"},
            "unknown instance type 'g4dn.xlarg'; did you mean: g4dn.xlarge",
        ),
        ({"gpus": -1}, "gpus must be >= 0, got -1"),
        ({"gpus": "4"}, "gpus must be an integer, not '4'"),
        ({"gpus": True}, "gpus must be an integer, not True"),
        ({"disk_size": 10}, "disk_size must be 20 to 16384, got 10"),
        ({"disk_size": 20000}, "disk_size must be 20 to 16384, got 20000"),
        ({"max_nodes": 0}, "max_nodes must be 1 to 100, got 0"),
        ({"retries": -1}, "retries must be 0 to 100"),
        ({"trials": 3}, "trials only applies to strategy random_search"),
        ({"strategy": "random_search"}, "strategy random_search needs trials"),
        ({"strategy": "bayes"}, "strategy must be one of: grid_search, random_search; got 'bayes'"),
        ({"backend": "gcp"}, "backend must be one of: local, aws, slurm; got 'gcp'"),
        ({"spot": "yes"}, "spot must be true or false, not 'yes'"),
        ({"name": "My Run"}, "invalid name 'My Run'"),
        ({"name": "../x"}, "invalid name '../x'"),
        ({"datastore": "../x"}, "invalid datastore name '../x'"),
        ({"datastore": "a;b"}, "invalid datastore name 'a;b'"),
        ({"datastore": "$(x)"}, "invalid datastore name '$(x)'"),
        ({"datastore": "kin:"}, "the version after ':' must be an integer >= 1"),
        ({"datastore": "kin:0"}, "the version after ':' must be an integer >= 1"),
        ({"datastore": "kin:2", "datastore_version": 3}, "disagree"),
        ({"datastore_version": 2}, "datastore_version is set but datastore is not"),
        ({"datastore": "k", "datastore_mount_dir": "data"}, "must be an absolute path"),
        ({"datastore": "k", "datastore_mount_dir": "/a/../etc"}, "must be an absolute path"),
        ({"env": {"LAUNCH_RUN": "x"}}, "LAUNCH_RUN is set by the launcher"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, "CUDA_VISIBLE_DEVICES is set by the launcher"),
        ({"env": {"A B": "x"}}, "invalid variable name 'A B'"),
        ({"env": {"A": [1]}}, "env.A must be a string or number"),
        ({"env": ["A=1"]}, "env must be a mapping"),
        ({"max_runtime": "soon"}, "max_runtime must be seconds or a duration like 90m"),
        ({"max_runtime": 0}, "max_runtime must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"max_experiments": 0}, "max_experiments must be 1 to 100000, got 0"),
        ({"max_experiments": 100001}, "max_experiments must be 1 to 100000, got 100001"),
        ({"max_experiments": "many"}, "max_experiments must be an integer, not 'many'"),
        (
            {"script_args": ["--lr", "range(1001)"]},
            "more than the 1000 allowed per run (a guard against typos); pass --max-experiments",
        ),
        (
            {"script_args": ["--lr", "range(20)"], "max_experiments": 10},
            "pass --max-experiments 20 (spec: max_experiments)",
        ),
        (
            {"script_args": ["--lr", "[1, 2]"], "strategy": "random_search", "trials": 1001},
            "trials 1001 gives 1001 experiments, more than the 1000 allowed",
        ),
        ({"script_args": ["--lr", "uniform(1e-4, 1e-1, 5"]}, "not a valid call (unclosed '(')"),
        ({"script_args": ["--lr", "uniform(1e-4, 1e-1)"]}, "grid_search needs a count"),
        (
            {"script_args": ["--e", 5]},
            "script_args[1] must be a string, not int 5; quote it in YAML",
        ),
        ({"script_args": {"a": 1}}, "script_args must be a list of strings or one string"),
        ({"script_args": "--x 'unclosed"}, "script_args: cannot split"),
        (
            {"script_args": ["--lr", "[0.01, "]},
            "bad sweep --lr '[0.01, ': not a valid list literal",
        ),
        ({"script_args": ["--lr", "normal(0,1,3)"]}, "unknown function 'normal'"),
        ({"lr": 0.1}, "unknown field 'lr'"),
    ],
)
def test_bad_values_are_one_line_spec_errors(workdir, overrides, message):
    overrides.setdefault("script", "train.py")
    with pytest.raises(SpecError) as e:
        load(workdir, **overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_script_must_exist_inside_workdir(workdir):
    with pytest.raises(SpecError, match="script not found: nope.py"):
        load(workdir, script="nope.py")
    with pytest.raises(SpecError, match="script not found: sub"):
        load(workdir, script="sub")
    (workdir.parent / "outside.py").write_text("")
    with pytest.raises(SpecError, match="is outside the working directory"):
        load(workdir, script="../outside.py")
    assert load(workdir, script="./sub/../train.py").script == "train.py"
    assert load(workdir, script=str(workdir / "sub" / "t.py")).script == "sub/t.py"
    with pytest.raises(SpecError, match="script is required"):
        load(workdir)
    with pytest.raises(SpecError, match="script must be a non-empty string"):
        load(workdir, script=3)


def test_unknown_yaml_key_suggests_the_right_one(workdir):
    p = write(workdir, "script: train.py\ninstance_typ: g5.xlarge\n")
    with pytest.raises(
        SpecError, match=r"unknown field 'instance_typ'; did you mean 'instance_type'\?"
    ):
        load(workdir, p)
    p = write(workdir, "script: train.py\nspot: true\nuse_spot: true\n")
    with pytest.raises(SpecError, match="field 'spot' is given twice"):
        load(workdir, p)


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("- a\n- b\n", "must be a mapping of field: value, not list"),
        ("script: [unclosed\n", "invalid YAML"),
        ("1: x\n", "keys must be strings"),
    ],
)
def test_bad_yaml_files(workdir, text, message):
    p = write(workdir, text)
    with pytest.raises(SpecError, match=message):
        load(workdir, p)


def test_missing_spec_file(workdir):
    with pytest.raises(SpecError, match="spec file not found: .*nope.yaml"):
        load(workdir, workdir / "nope.yaml")


def test_from_dict_rejects_non_mapping():
    with pytest.raises(SpecError, match="must be a mapping"):
        JobSpec.from_dict(["script"])


def test_env_flag_adds_to_the_spec_env(workdir):
    p = write(workdir, {"script": "train.py", "env": {"A": "1", "B": "2"}})
    spec = load(workdir, p, env={"B": "3", "C": "4"})
    assert spec.env == {"A": "1", "B": "3", "C": "4"}


def test_max_experiments_lifts_the_cap_from_yaml_or_flags(workdir):
    assert load(workdir, script="train.py").max_experiments == 1000
    args = ["--lr", "range(2500)"]
    p = write(workdir, {"script": "train.py", "script_args": args, "max_experiments": 2500})
    spec = load(workdir, p)
    assert spec.max_experiments == 2500 and len(spec.experiments()) == 2500
    assert JobSpec.from_dict(spec.to_dict()).max_experiments == 2500  # kept in run.json
    spec = load(workdir, script="train.py", script_args=args, max_experiments=3000)
    assert len(spec.experiments()) == 2500
    trials = dict(strategy="random_search", trials=1500, max_experiments=1500)
    spec = load(
        workdir, script="train.py", script_args=["--lr", "loguniform(1e-5, 1e-1)"], **trials
    )
    assert len({e.params["lr"] for e in spec.experiments()}) == 1500
