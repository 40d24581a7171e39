"""``cluster.kind: slurm | kubernetes``: the Slurm job script dask-jobqueue writes from params (its resources, and a
prologue that really gives the worker the pins a local worker gets), the DaskCluster resource validated against the
installed operator's CRD, walltime handling, params checks, and the one-line error where an extra is missing."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline.cluster import BATCH_DASK_CONFIG, SINGLE_THREAD_ENV
from pipeline.kernels import effective_env, kernel_env
from pipeline.params import PROJECT_PARAMS, ClusterParams, ParamsError, load, stage_params


def cluster_params(**overrides) -> ClusterParams:
    raw = load(PROJECT_PARAMS)["cluster"]
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return ClusterParams.model_validate(raw)


def test_slurm_job_script_holds_the_resources_and_the_local_pins(tmp_path):
    pytest.importorskip("dask_jobqueue", reason="the slurm extra (dask-jobqueue) is not installed")
    from pipeline.cluster_backends import slurm_cluster

    params = cluster_params(kind="slurm", slurm={"queue": "batch", "account": "proj42", "cores": 8, "processes": 4,
                                                 "memory": "32GiB", "walltime": "02:00:00",
                                                 "job_extra": ["--qos=normal"], "log_directory": str(tmp_path)})
    cluster = slurm_cluster(params)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for directive in ("#SBATCH -p batch", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                      "#SBATCH -t 02:00:00", "#SBATCH --qos=normal", "#SBATCH -J wflwv-worker"):
        assert directive in script, directive
    command = script.strip().splitlines()[-1]
    assert "distributed.cli.dask_worker" in command
    assert "--nworkers 4" in command and "--nthreads 2" in command  # 8 cores over 4 processes
    assert "--lifetime 6900s --lifetime-stagger 240s" in command  # 5 min before the 2 h walltime
    # run the script's prologue for real (everything between the directives and the worker command): the worker then
    # starts with the thread pins, the batch settings and this node's kernel pins, as a LocalCluster worker does
    prologue = [line for line in script.splitlines()[:-1] if line and not line.startswith("#")]
    shell = "\n".join([*prologue, f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"])
    clean = {k: v for k, v in os.environ.items() if k not in (*SINGLE_THREAD_ENV, *kernel_env())}
    out = subprocess.run(["bash", "-c", shell], env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    env = json.loads(out.stdout.strip().splitlines()[-1])
    for key, value in {**SINGLE_THREAD_ENV, **effective_env({}, kernel_env())}.items():
        assert env.get(key) == value, key
    assert env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == str(BATCH_DASK_CONFIG[
        "distributed.worker.profile.enabled"])
    assert env["PWD"] == str(ROOT)  # workers run from the project, as the stages do


@pytest.mark.parametrize("walltime, expected", [
    ("02:00:00", ("6900s", "240s")), ("30", ("1500s", "180s")), ("1-00:00", ("86100s", "240s")),
    ("00:03:00", ("60s", "18s")), ("45:30", ("2430s", "240s")),
])
def test_workers_stop_before_the_walltime(walltime, expected):
    from pipeline.cluster_backends import slurm_lifetime

    assert slurm_lifetime(walltime) == expected


def test_kubernetes_spec_validates_against_the_operators_schema():
    pytest.importorskip("dask_kubernetes", reason="the kubernetes extra (dask-kubernetes) is not installed")
    pytest.importorskip("jsonschema", reason="jsonschema (part of the kubernetes extra) is not installed")
    from pipeline.cluster_backends import kubernetes_spec, validate_kubernetes_spec

    params = cluster_params(kind="kubernetes", kubernetes={"image": "registry.example/wflwv:1.0", "replicas": 6,
                                                           "namespace": "landmarks", "cpu": "2", "memory": "8Gi"})
    spec = kubernetes_spec(params)  # validated inside; again here on a copy that is then spoilt
    validate_kubernetes_spec(copy.deepcopy(spec))
    worker = spec["spec"]["worker"]
    container = worker["spec"]["containers"][0]
    assert worker["replicas"] == 6 and container["image"] == "registry.example/wflwv:1.0"
    assert spec["metadata"] == {"name": "wflwv", "namespace": "landmarks"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert all(env[k] == v for k, v in SINGLE_THREAD_ENV.items())
    assert container["command"][:2] == ["sh", "-c"] and "kernel_env" in container["command"][2]
    assert "--nthreads" in container["args"]

    def spoilt(change):
        bad = copy.deepcopy(spec)
        change(bad)
        with pytest.raises(ValueError) as err:
            validate_kubernetes_spec(bad)
        return str(err.value)

    assert "'worker' is a required property" in spoilt(lambda s: s["spec"].pop("worker"))
    assert spoilt(lambda s: s["spec"]["worker"].update(replicas="six")).startswith("spec.worker.replicas:")
    message = spoilt(lambda s: s["spec"]["worker"]["spec"]["containers"][0].update(imagePullPolicyy="Always"))
    assert message == ("DaskCluster.spec.worker.spec.containers[0].imagePullPolicyy: not a field of a Kubernetes "
                       "PodSpec (or of a type it holds)")
    assert "apiVersion/kind" in spoilt(lambda s: s.update(kind="DaskJob"))


def test_cluster_kind_params_are_checked_in_one_line(tmp_path):
    assert cluster_params(scheduler="tcp://10.0.0.5:8786").kind == "address"  # as before cluster.kind existed
    raw = load(PROJECT_PARAMS)
    cases = {"cluster: kind address needs cluster.scheduler": {"kind": "address", "scheduler": None},
             "cluster: cluster.scheduler is for kind address only (kind slurm": {"kind": "slurm",
                                                                                 "scheduler": "tcp://x:1"},
             "cluster.slurm.walltime: string should match pattern": {"slurm": {**raw["cluster"]["slurm"],
                                                                               "walltime": "two hours"}},
             "cluster.kind: input should be": {"kind": "pbs"}}
    import yaml

    for expected, change in cases.items():
        bad = copy.deepcopy(raw)
        bad["cluster"].update(change)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ParamsError) as err:
            stage_params("cluster", path)
        assert expected in str(err.value) and str(err.value).startswith(f"{path}:"), str(err.value)
        assert "\n" not in str(err.value)


def test_download_retry_param():
    assert stage_params("download", PROJECT_PARAMS).retry in ("failed", "all", "none")
    with pytest.raises(ParamsError, match=r"download.retry: input should be 'failed', 'all' or 'none'"):
        stage_params("download", PROJECT_PARAMS, retry="sometimes")


BLOCKED = """
import sys
sys.modules[sys.argv[1]] = None  # as on a machine without the extra: importing it raises ImportError
from pipeline.cli import run_stage
from pipeline.cluster import dask_client
from pipeline.params import PROJECT_PARAMS, stage_params


def main(argv):
    with dask_client(stage_params("cluster", PROJECT_PARAMS, kind=sys.argv[2])):
        return 0


sys.exit(run_stage(main, []))
"""


@pytest.mark.parametrize("module, kind, extra", [("dask_jobqueue", "slurm", "slurm"),
                                                 ("dask_kubernetes", "kubernetes", "kubernetes")])
def test_a_kind_whose_extra_is_missing_is_one_error_line(module, kind, extra):
    out = subprocess.run([sys.executable, "-c", BLOCKED, module, kind], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 2
    assert re.fullmatch(rf"error: cluster.kind {kind}: {module}\S* is not installed: pip install '.\[{extra}\]' "
                        r"\(README: 'Run on a cluster'\)\n", out.stderr), out.stderr
