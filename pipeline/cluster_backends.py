"""dask clusters on a batch scheduler or Kubernetes: ``cluster.kind: slurm`` (dask-jobqueue's ``SLURMCluster``) and
``cluster.kind: kubernetes`` (the Dask Kubernetes operator's ``KubeCluster``). Both are optional extras
(``pip install .[slurm]``, ``pip install .[kubernetes]``); a kind whose extra is missing is one line naming it.

Workers are set up as the LocalCluster's are (:func:`pipeline.cluster.dask_client`): before their Python starts, the
job script (or the pod's command) exports the single-thread pins and the SIMD kernel pins that the node itself
reports (:func:`pipeline.kernels.kernel_env`, probed on the node: numpy reads them at import), and dask's batch
settings (:data:`pipeline.cluster.BATCH_DASK_CONFIG`); a worker plugin runs :func:`pipeline.cluster.pin_threads`
(torch and OpenCV on one thread, malloc tuned) on every worker as it joins, before it takes a task. The run cache
refuses results from a worker whose environment differs from the client's (:func:`pipeline.runcache.worker_refusal`).

Slurm walltime, as dask-jobqueue recommends: workers stop themselves before the job's walltime (``--lifetime``,
walltime minus 5 minutes, staggered over up to 4 minutes so that they do not all leave at once) and ``adapt`` keeps
between ``minimum_jobs`` and ``maximum_jobs`` jobs, submitting new ones as old ones end; a video whose worker left is
computed again on another (the run cache keeps every finished one).
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.params import ClusterParams, KubernetesParams, ParamsError, SlurmParams

__all__ = ["ExtraMissing", "slurm_cluster", "slurm_lifetime", "kubernetes_spec", "validate_kubernetes_spec",
           "kubernetes_cluster", "external_client", "worker_environment", "KERNEL_PINS_SHELL"]

log = logging.getLogger(__name__)
_PROJECT = Path(__file__).resolve().parent.parent

#: Shell that exports this node's SIMD kernel pins (probed on the node, as :func:`pipeline.kernels.pin_kernels`
#: does), for job scripts and pod commands; ``{python}`` is the interpreter on the node.
KERNEL_PINS_SHELL = ('eval "$({python} -c {code})"')
_KERNEL_PINS_CODE = ("import os, shlex; from pipeline.kernels import effective_env, kernel_env; "
                     "print('; '.join(f'export {k}={shlex.quote(v)}' for k, v in effective_env(os.environ, "
                     "kernel_env()).items()))")


class ExtraMissing(ParamsError):
    """The optional package a cluster kind needs is not installed; the message names the extra (a stage ends in
    that one line, as for any bad param)."""


def _require(module: str, kind: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExtraMissing(f"cluster.kind {kind}: {err.name or module} is not installed: pip install '.[{extra}]' "
                           "(README: 'Run on a cluster')") from None


def worker_environment() -> dict[str, str]:
    """The fixed part of a worker's environment: one thread per numeric library and dask's batch settings (the
    kernel pins depend on the node's CPU and are exported by :data:`KERNEL_PINS_SHELL` there)."""
    from pipeline.cluster import BATCH_DASK_CONFIG, SINGLE_THREAD_ENV

    dask_env = {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
                for key, value in BATCH_DASK_CONFIG.items()}
    return {**SINGLE_THREAD_ENV, **dask_env, "PYTHONPATH": str(_PROJECT)}


def _kernel_pins(python: str) -> str:
    return KERNEL_PINS_SHELL.format(python=shlex.quote(python), code=shlex.quote(_KERNEL_PINS_CODE))


def _seconds(walltime: str) -> int:
    """Slurm's time limit in seconds: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``."""
    days, dash, clock = walltime.partition("-") if "-" in walltime else ("0", "", walltime)
    parts = [int(p) for p in clock.split(":")]
    if dash:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds


def slurm_lifetime(walltime: str) -> tuple[str, str]:
    """``(--lifetime, --lifetime-stagger)`` for a job of ``walltime``: 5 minutes before the end (never under a
    minute), staggered over at most 4 minutes or a tenth of the walltime."""
    total = _seconds(walltime)
    stagger = min(240, total // 10)
    lifetime = max(60, total - 300)
    return f"{lifetime}s", f"{stagger}s"


def slurm_cluster(params: ClusterParams) -> Any:
    """A ``SLURMCluster`` from ``params.slurm`` (no job is submitted until it is scaled or adapted)."""
    jobqueue = _require("dask_jobqueue", "slurm", "slurm")
    slurm: SlurmParams = params.slurm
    python = slurm.python or sys.executable
    lifetime, stagger = slurm_lifetime(slurm.walltime)
    prologue = [f"cd {shlex.quote(str(_PROJECT))}",
                *(f"export {k}={shlex.quote(v)}" for k, v in worker_environment().items()),
                _kernel_pins(python)]
    return jobqueue.SLURMCluster(
        queue=slurm.queue, account=slurm.account, cores=slurm.cores, processes=slurm.processes,
        memory=slurm.memory, walltime=slurm.walltime, job_extra_directives=list(slurm.job_extra),
        job_script_prologue=prologue, python=python, interface=slurm.interface,
        log_directory=slurm.log_directory, job_name="wflwv-worker",
        worker_extra_args=["--lifetime", lifetime, "--lifetime-stagger", stagger])


def kubernetes_spec(params: ClusterParams) -> dict[str, Any]:
    """The ``DaskCluster`` resource for ``params.kubernetes``: workers in ``image``, ``replicas`` of them, each pod
    with the same pins as a local worker, validated against the operator's schema
    (:func:`validate_kubernetes_spec`)."""
    operator = _require("dask_kubernetes.operator", "kubernetes", "kubernetes")
    k8s: KubernetesParams = params.kubernetes
    quantities = {"cpu": k8s.cpu, "memory": k8s.memory}
    spec: dict[str, Any] = operator.make_cluster_spec(
        name=k8s.name, image=k8s.image, n_workers=k8s.replicas,
        resources={"requests": dict(quantities), "limits": dict(quantities)}, env=worker_environment(),
        worker_command="dask-worker")
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    worker["args"] = [*worker["args"], "--nthreads", str(params.threads_per_worker)]
    # the node's kernel pins before the worker's Python starts, then the operator's own command line ("$0" "$@")
    worker["command"] = ["sh", "-c", f'{_kernel_pins("python")} && exec "$0" "$@"']
    if k8s.namespace:
        spec["metadata"]["namespace"] = k8s.namespace
    try:
        validate_kubernetes_spec(spec)
    except ValueError as err:
        raise ParamsError(f"cluster.kubernetes: the DaskCluster it makes is not valid: {err}") from None
    return spec


def _operator_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's ``DaskCluster`` CRD and its OpenAPI schema, the operator's own ``$ref``s resolved in place and
    the Kubernetes core types it refers to (PodSpec, ServiceSpec) left as objects named by ``x-k8s-type``."""
    base = resources.files("dask_kubernetes.operator") / "customresources"
    crd = yaml.safe_load((base / "daskcluster.yaml").read_text())
    definitions = yaml.safe_load((base / "templates.yaml").read_text())["definitions"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.rpartition("/")[2]
                if name in definitions:
                    return resolve(definitions[name])
                return {"type": "object", "x-k8s-type": name.rpartition(".")[2]}  # io.k8s.api.core.v1.PodSpec
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    schema = resolve(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return crd, schema


def _k8s_objects(schema: Any, value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """``(path, Kubernetes type, value)`` of every core-type object inside ``value``."""
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return
    if "x-k8s-type" in schema:
        yield path, schema["x-k8s-type"], value
        return
    for key, sub in (schema.get("properties") or {}).items():
        if key in value:
            yield from _k8s_objects(sub, value[key], f"{path}.{key}")


def _check_k8s_object(kind: str, value: dict[str, Any], path: str) -> None:
    """``value`` must read back unchanged through the Kubernetes client's ``V1<kind>`` model: a required field left
    out raises, a key the API does not know is dropped (and so found)."""
    client = _require("kubernetes.client", "kubernetes", "kubernetes")
    api = client.ApiClient()
    try:
        model = api._ApiClient__deserialize(value, f"V1{kind}")  # the client's own (name-mangled) reader
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a valid {kind}: {err}") from None
    back = api.sanitize_for_serialization(model)
    missing = _first_difference(value, back, path)
    if missing:
        raise ValueError(f"{missing}: not a field of a Kubernetes {kind} (or of a type it holds)")


def _first_difference(sent: Any, back: Any, path: str) -> str | None:
    if isinstance(sent, dict):
        for key, value in sent.items():
            if not isinstance(back, dict) or key not in back:
                return f"{path}.{key}"
            deeper = _first_difference(value, back[key], f"{path}.{key}")
            if deeper:
                return deeper
    elif isinstance(sent, list):
        for i, value in enumerate(sent):
            if not isinstance(back, list) or i >= len(back):
                return f"{path}[{i}]"
            deeper = _first_difference(value, back[i], f"{path}[{i}]")
            if deeper:
                return deeper
    return None


def validate_kubernetes_spec(spec: dict[str, Any]) -> None:
    """Check a ``DaskCluster`` resource against the installed operator's CRD: its group, version and kind, its
    OpenAPI schema (jsonschema), and every PodSpec/ServiceSpec inside it against the Kubernetes API's models. Raises
    ``ValueError`` naming the first bad key."""
    jsonschema = _require("jsonschema", "kubernetes", "kubernetes")
    crd, schema = _operator_schema()
    api_version = f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
    if spec.get("apiVersion") != api_version or spec.get("kind") != crd["spec"]["names"]["kind"]:
        raise ValueError(f"apiVersion/kind {spec.get('apiVersion')}/{spec.get('kind')}: the operator serves "
                         f"{api_version}/{crd['spec']['names']['kind']}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(spec))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"{where}: {error.message}")
    for path, kind, value in _k8s_objects(schema, spec, "DaskCluster"):
        _check_k8s_object(kind, value, path)


def kubernetes_cluster(params: ClusterParams) -> Any:
    """A ``KubeCluster`` from :func:`kubernetes_spec` (this creates the resource on the current kube context)."""
    operator = _require("dask_kubernetes.operator", "kubernetes", "kubernetes")
    spec = kubernetes_spec(params)
    return operator.KubeCluster(custom_cluster_spec=spec, namespace=params.kubernetes.namespace)


@contextmanager
def external_client(params: ClusterParams, setup: Callable[[], None]) -> Iterator[Any]:
    """A dask client on a Slurm or Kubernetes cluster of ``params``; every worker runs ``setup`` when it joins
    (workers come and go: a plugin, not a one-off ``client.run``)."""
    from dask.distributed import Client, WorkerPlugin

    class _Setup(WorkerPlugin):
        name = "wflwv-setup"

        def setup(self, worker: Any) -> None:
            setup()

    if params.kind == "slurm":
        cluster = slurm_cluster(params)
        cluster.adapt(minimum_jobs=params.slurm.minimum_jobs, maximum_jobs=params.slurm.maximum_jobs)
        log.info("slurm: adapting between %d and %d jobs; job script:\n%s", params.slurm.minimum_jobs,
                 params.slurm.maximum_jobs, cluster.job_script())
    elif params.kind == "kubernetes":
        cluster = kubernetes_cluster(params)
        log.info("kubernetes: DaskCluster %s with %d workers", params.kubernetes.name, params.kubernetes.replicas)
    else:
        raise ValueError(f"cluster.kind {params.kind}: not a Slurm or Kubernetes cluster")
    with cluster, Client(cluster) as client:
        client.register_plugin(_Setup())
        yield client
