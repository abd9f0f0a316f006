"""Instance catalog: lookups, filters and cost estimates."""

from __future__ import annotations

import pytest

from launcher.errors import SpecError
from launcher.spec import catalog
from launcher.spec.jobspec import JobSpec


def test_families_present_with_sane_numbers():
    names = set(catalog.INSTANCES)
    for family in ("g4dn.", "g5.", "p3.", "p4d.", "t3.", "m5.", "c5."):
        assert any(n.startswith(family) for n in names), family
    for inst in catalog.INSTANCES.values():
        assert inst.vcpus > 0 and inst.memory_gib > 0
        assert 0 < inst.spot_price_hour < inst.price_hour
        assert (inst.gpus > 0) == bool(inst.gpu_model) == (inst.gpu_memory_gib > 0)


def test_get_instance():
    t4 = catalog.get_instance("g4dn.12xlarge")
    assert (t4.gpus, t4.gpu_model, t4.gpu_memory_gib, t4.vcpus) == (4, "T4", 16, 48)
    assert catalog.get_instance("p4d.24xlarge").gpu_model == "A100"


def test_unknown_instance_lists_close_matches():
    with pytest.raises(SpecError, match=r"unknown instance type 'g4dn\.xlarg'; did you mean: "):
        catalog.get_instance("g4dn.xlarg")
    with pytest.raises(SpecError, match="`launch instances` lists all"):
        catalog.get_instance("zzz")


def test_list_instances_filters_by_gpus_cheapest_first():
    rows = catalog.list_instances(gpus=4)
    assert rows and all(r.gpus >= 4 for r in rows)
    assert [r.price_hour for r in rows] == sorted(r.price_hour for r in rows)
    assert rows[0].name == "g4dn.12xlarge"
    assert len(catalog.list_instances()) == len(catalog.INSTANCES)
    assert catalog.list_instances(gpus=9) == []


def test_instances_with_gpus_prefers_the_same_family():
    assert catalog.instances_with_gpus(4, family="g5")[0] == "g5.12xlarge"
    assert catalog.instances_with_gpus(4, family="g4dn")[0] == "g4dn.12xlarge"


def test_estimate_cost(tmp_path):
    (tmp_path / "t.py").write_text("")
    spec = JobSpec.load(
        script="t.py",
        script_args=["--lr", "[1, 2, 3, 4]"],
        instance_type="g4dn.xlarge",
        max_nodes=3,
        workdir=tmp_path,
    )
    cost = catalog.estimate_cost(spec)
    assert cost["nodes"] == 3
    assert cost["on_demand_hour"] == pytest.approx(3 * 0.526)
    assert cost["hour"] == cost["on_demand_hour"]
    assert "max_total" not in cost
    # one node per experiment at most: 10 nodes for 1 experiment cost one node
    one = JobSpec.load(script="t.py", max_nodes=10, workdir=tmp_path)
    assert catalog.estimate_cost(one)["nodes"] == 1
    spot = JobSpec.load(
        script="t.py",
        script_args=["--lr", "[1, 2, 3, 4]"],
        spot=True,
        max_runtime="30m",
        workdir=tmp_path,
    )
    cost = catalog.estimate_cost(spot)
    assert cost["hour"] == cost["spot_hour"] < cost["on_demand_hour"]
    # 4 experiments x half an hour x the spot price of one node
    assert cost["max_total"] == pytest.approx(
        4 * 0.5 * catalog.get_instance("g4dn.xlarge").spot_price_hour
    )
