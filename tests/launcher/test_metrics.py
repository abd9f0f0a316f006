"""Leaderboard and metric plots from Lightning CSVLogger metrics.csv files."""

from __future__ import annotations

import struct

import pytest

from launcher.errors import NotFoundError, SpecError
from launcher.runs import metrics as m

RUN = "sweep-1"
HEADER = "epoch,step,lr,train_loss,val_loss,val_acc1,val_acc5\n"


def csv_for(accs: list[float], losses: list[float]) -> str:
    """CSVLogger style: a training row (val blank) and a validation row (train blank) per epoch."""
    lines = [HEADER]
    for e, (acc, loss) in enumerate(zip(accs, losses, strict=True)):
        lines.append(f"{e},{10 * e + 9},0.01,{loss + 0.1},,,\n")
        lines.append(f"{e},{10 * e + 9},,,{loss},{acc},{min(1.0, acc + 0.2)}\n")
    return "".join(lines)


@pytest.fixture
def run(file_storage):
    s = file_storage
    s.write_json(f"runs/{RUN}/run.json", {"name": RUN})
    exps = {
        "exp-0": (
            {"lr": 0.01, "backbone": "x3d_xs"},
            "succeeded",
            [0.3, 0.6, 0.55],
            [1.2, 0.8, 0.9],
        ),
        "exp-1": (
            {"lr": 0.001, "backbone": "x3d_xs"},
            "succeeded",
            [0.4, 0.7, 0.8],
            [1.0, 0.7, 0.6],
        ),
        "exp-2": ({"lr": 0.01, "backbone": "x3d_m"}, "running", [0.2, 0.5], [1.5, 1.1]),
        "exp-3": ({"lr": 0.001, "backbone": "x3d_m"}, "queued", None, None),
    }
    for e, (params, state, accs, losses) in exps.items():
        base = f"runs/{RUN}/experiments/{e}"
        s.write_json(f"{base}/params.json", {"id": e, "args": [], "params": params})
        s.write_json(f"{base}/status.json", {"state": state})
        if accs:
            s.write_text(f"{base}/artifacts/metrics.csv", csv_for(accs, losses))
    return s


def test_parse_handles_blanks_and_junk():
    rows = m.parse_metrics_csv("epoch,step,val_acc1\n0,9,\n0,9,0.5\n1,19,nan\n2,29,abc\n")
    assert rows[0] == {"epoch": 0.0, "step": 9.0, "val_acc1": None}
    assert rows[1]["val_acc1"] == 0.5
    assert rows[2]["val_acc1"] is None and rows[3]["val_acc1"] is None
    assert m.columns(rows) == ["val_acc1"]
    assert m.parse_metrics_csv("") == []


def test_default_metric_and_direction():
    assert m.default_metric(["train_loss", "val_loss", "val_acc1"]) == "val_acc1"
    assert m.default_metric(["train_loss", "val_f1", "val_loss"]) == "val_f1"
    assert m.default_metric(["train_loss"]) == "train_loss"
    assert m.default_metric([]) is None
    assert m.minimize("val_loss") and m.minimize("val_err") and m.minimize("test_error")
    assert not m.minimize("val_acc1") and not m.minimize("val_f1")


def test_curve_keeps_last_value_per_epoch():
    rows = m.parse_metrics_csv("epoch,step,val_acc1\n0,9,0.1\n1,19,0.2\n1,19,0.3\n")
    assert m.curve(rows, "val_acc1") == [(0, 0.1), (1, 0.3)]


def test_leaderboard_default_val_acc1_best_first(run):
    rows = m.leaderboard(run, RUN)
    assert [r.experiment for r in rows] == ["exp-1", "exp-0", "exp-2", "exp-3"]
    top = rows[0]
    assert (top.metric, top.best, top.epoch, top.status) == ("val_acc1", 0.8, 2, "succeeded")
    assert top.params == {"lr": 0.001, "backbone": "x3d_xs"}
    assert (rows[1].best, rows[1].epoch) == (0.6, 1)  # best epoch, not the last one
    assert (rows[3].best, rows[3].epoch, rows[3].status) == (None, None, "queued")
    assert [r.rank for r in rows] == [1, 2, 3, None]


def test_leaderboard_loss_is_minimized(run):
    rows = m.leaderboard(run, RUN, metric="val_loss")
    assert [(r.experiment, r.best) for r in rows[:3]] == [
        ("exp-1", 0.6),
        ("exp-0", 0.8),
        ("exp-2", 1.1),
    ]
    assert m.leaderboard(run, RUN, metric="val_loss", mode="max")[0].experiment == "exp-2"


def test_leaderboard_errors(run):
    with pytest.raises(
        SpecError, match="metric 'val_acc' was not logged by run sweep-1; logged: lr, "
    ):
        m.leaderboard(run, RUN, metric="val_acc")
    with pytest.raises(SpecError, match="mode must be min or max"):
        m.leaderboard(run, RUN, mode="up")
    with pytest.raises(NotFoundError, match="run 'nope' not found"):
        m.leaderboard(run, "nope")


def test_leaderboard_before_any_metrics(file_storage):
    file_storage.write_json("runs/r/run.json", {})
    file_storage.write_json("runs/r/experiments/exp-0/params.json", {"id": "exp-0"})
    (row,) = m.leaderboard(file_storage, "r")
    assert (row.experiment, row.status, row.metric, row.best) == ("exp-0", "queued", None, None)
    with pytest.raises(NotFoundError, match="no experiment of run r has logged metrics yet"):
        m.plot_metrics(file_storage, "r", "x.png")


def test_label_names_params():
    assert m.label("exp-0", {"lr": 0.000123456, "backbone": "x3d_m"}) == (
        "exp-0: lr=0.0001235, backbone=x3d_m"
    )
    assert m.label("exp-3", {}) == "exp-3"


def test_plot_writes_a_real_png(run, tmp_path):
    out = m.plot_metrics(run, RUN, tmp_path / "plots" / "val_acc1.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (990, 605)
    assert len(data) > 20_000  # curves, legend and labels, not an empty canvas
    loss = m.plot_metrics(run, RUN, tmp_path / "loss.png", metric="val_loss")
    assert loss.read_bytes() != data


def test_launcher_modules_import_no_heavy_packages():
    """The CLI imports these; torch, boto3, s3fs and matplotlib must load only when used."""
    import subprocess
    import sys

    code = (
        "import sys, launcher.spec.jobspec, launcher.spec.sweep, launcher.spec.catalog, "
        "launcher.storage.datastores, launcher.storage.artifacts, launcher.runs.metrics, "
        "launcher.storage.transfer; "
        "heavy = ('torch', 'boto3', 's3fs', 'matplotlib', 'yaml'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pre_read_data_gives_the_same_results(run, tmp_path):
    data = m.read_run(run, RUN)
    assert [d.experiment for d in data] == ["exp-0", "exp-1", "exp-2", "exp-3"]
    assert m.leaderboard(run, RUN, metric="val_loss", data=data) == m.leaderboard(
        run, RUN, metric="val_loss"
    )
    a = m.plot_metrics(run, RUN, tmp_path / "a.png", data=data).read_bytes()
    assert a == m.plot_metrics(run, RUN, tmp_path / "b.png").read_bytes()


def test_plot_without_matplotlib_is_one_line_naming_the_extra(run, tmp_path, monkeypatch):
    import sys

    from launcher.errors import LaunchError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a launcher-only install
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(LaunchError) as e:
        m.plot_metrics(run, RUN, tmp_path / "curves.png")
    assert str(e.value) == (
        "plotting metrics needs matplotlib (not installed here); install the plot extra: "
        "pip install 'launch-video[plot]'"
    )
    assert not (tmp_path / "curves.png").exists()


def test_plot_with_a_broken_matplotlib_is_not_renamed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def kiwisolver_missing(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ModuleNotFoundError("No module named 'kiwisolver'", name="kiwisolver")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", kiwisolver_missing)
    with pytest.raises(ModuleNotFoundError, match="kiwisolver"):
        m.plot_figure()


def test_the_plot_extra_the_error_names_exists():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert m.PLOT_EXTRA == "pip install 'launch-video[plot]'"
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert "plot" in extras["all"][0].partition("[")[2].rstrip("]").split(",")
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])  # stays optional
