"""Deployment files are checked against the schemas of the tools that will read them.

- every manifest in k8s/ against the KubeRay CRDs (spec.versions[v1].schema.openAPIV3Schema) in
  ../shared/kuberay-crds, made strict: an object whose CRD lists its properties (and does not say
  x-kubernetes-preserve-unknown-fields) rejects any other key, so a misspelt field fails here instead
  of being pruned silently by the API server (proved by test_misspelt_field_is_caught);
- cluster/aws.yaml with Ray's own cluster-launcher validation (the same prepare_config +
  validate_config that `ray up` runs before it talks to AWS);
- every `python jobs/X.py ...` command written in k8s/, cluster/ and docs/deploy.md against that job's
  own argument parser, and serve_config.yaml against Ray Serve's own schema (and it must be what the
  RayService embeds).

A file that is missing (a job, serve_config.yaml, the CRDs) is a failure, never a skip.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
import tomllib
from contextlib import redirect_stderr
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = Path(os.environ.get("HTR_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
K8S = REPO / "k8s"
CLUSTER = REPO / "cluster"
SERVE_CONFIG = REPO / "serve_config.yaml"
IMAGE_REPO = "ghcr.io/htr-ray/htr-ray"
S3_SECRET = "htr-ray-s3"
S3_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# --------------------------------------------------------------------------- CRD schemas

def strictify(node):
    """OpenAPI v3 structural schema (as in a CRD) -> JSON schema that jsonschema checks strictly.

    - ``x-kubernetes-int-or-string: true``: an int or a string (quantities like "4Gi" or 4; the
      CRD's ``pattern`` still applies to the string form);
    - ``nullable: true``: null is allowed too;
    - an object that lists ``properties`` and neither sets ``additionalProperties`` nor
      ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``: the API
      server would prune an unknown key there, i.e. a typo would be silently dropped.
    """
    if isinstance(node, list):
        return [strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: strictify(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strictify(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = strictify(value)
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _crd_dir() -> Path:
    missing = [f for f in CRD_FILES.values() if not (CRD_DIR / f).is_file()]
    if missing:
        pytest.fail(f"KubeRay CRDs not found: expected {', '.join(missing)} in {CRD_DIR} "
                    f"(the shared folder next to the repo, or set HTR_KUBERAY_CRDS)")
    return CRD_DIR


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.load((_crd_dir() / CRD_FILES[kind]).read_text(), Loader=Loader)
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strictify(v1["schema"]["openAPIV3Schema"])
    # The CRD leaves metadata to the API server: hold it to what the server would require.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/v1"}
    schema["properties"]["kind"] = {"const": kind}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def validation_errors(doc: dict) -> list[str]:
    validator = crd_validator(doc.get("kind"))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def manifests() -> list[tuple[str, int, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml.load_all(path.read_text(), Loader=Loader)):
            if doc is not None:
                out.append((path.name, i, doc))
    return out


def ray_manifests():
    return [(n, i, d) for n, i, d in manifests() if d.get("kind") in CRD_FILES]


def cluster_specs(doc: dict) -> list[dict]:
    """The RayClusterSpec(s) a KubeRay resource carries."""
    spec = doc["spec"]
    return {"RayCluster": [spec], "RayJob": [spec.get("rayClusterSpec")],
            "RayService": [spec.get("rayClusterConfig")]}[doc["kind"]]


def groups(cspec: dict):
    yield "head", cspec["headGroupSpec"]
    for g in cspec.get("workerGroupSpecs", []):
        yield g["groupName"], g


def _manifest_ids():
    return [f"{n}#{i}:{d.get('kind')}" for n, i, d in ray_manifests()]


def test_the_expected_manifests_exist():
    kinds = {}
    for name, _, doc in manifests():
        kinds.setdefault(doc.get("kind"), []).append(name)
    assert kinds.get("RayCluster") == ["raycluster.yaml"]
    assert sorted(kinds.get("RayJob", [])) == ["rayjob-train.yaml", "rayjob-transcribe.yaml"]
    assert kinds.get("RayService") == ["rayservice.yaml"]
    assert kinds.get("Secret") == ["secret-s3.example.yaml"]


@pytest.mark.parametrize("name,index,doc", ray_manifests(), ids=_manifest_ids())
def test_manifest_validates_against_kuberay_crd(name, index, doc):
    errors = validation_errors(doc)
    assert not errors, f"{name} (document {index}) does not match the {doc['kind']} CRD:\n" + "\n".join(errors)


def _typos(doc):
    """(description, text the error must show, mutated copy): each copy has one misspelt or mistyped field."""
    def mutate(fn):
        d = copy.deepcopy(doc)
        fn(d)
        return d

    def rename(obj, old, new):
        obj[new] = obj.pop(old)

    head = lambda d: d["spec"]["headGroupSpec"]  # noqa: E731
    c0 = lambda d: head(d)["template"]["spec"]["containers"][0]  # noqa: E731
    return [
        ("spec.enableInTreeAutoScaling", "enableInTreeAutoScaling", mutate(lambda d: rename(d["spec"], "enableInTreeAutoscaling", "enableInTreeAutoScaling"))),
        ("headGroupSpec.rayStartParam", "rayStartParam'", mutate(lambda d: rename(head(d), "rayStartParams", "rayStartParam"))),
        ("container.resource", "'resource'", mutate(lambda d: rename(c0(d), "resources", "resource"))),
        ("env[].valueFrom.secretKeyref", "secretKeyref", mutate(lambda d: rename(next(e for e in c0(d)["env"] if "valueFrom" in e)["valueFrom"], "secretKeyRef", "secretKeyref"))),
        ("workerGroupSpecs[0].maxReplica", "maxReplica'", mutate(lambda d: rename(d["spec"]["workerGroupSpecs"][0], "maxReplicas", "maxReplica"))),
        ("minReplicas as text", "minReplicas", mutate(lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("minReplicas", "zero"))),
        ("memory limit '8 GB'", "limits/memory", mutate(lambda d: c0(d)["resources"]["limits"].__setitem__("memory", "8 GB"))),
        ("metadata.nme", "nme", mutate(lambda d: rename(d["metadata"], "name", "nme"))),
    ]


def test_misspelt_field_is_caught():
    """The validation is strict enough to matter: the real RayCluster passes, and each copy of it
    with one typo fails, at the place of the typo."""
    (doc,) = [d for n, _, d in ray_manifests() if n == "raycluster.yaml"]
    assert validation_errors(doc) == []
    for what, needle, bad in _typos(doc):
        errors = validation_errors(bad)
        assert errors, f"a manifest with {what} passed validation"
        assert any(needle in e for e in errors), f"{what}: the errors do not point at it: {errors}"


# --------------------------------------------------------------------------- manifest content

def ray_containers():
    for name, _, doc in ray_manifests():
        for cspec in cluster_specs(doc):
            for group, g in groups(cspec):
                for c in g["template"]["spec"]["containers"]:
                    yield name, group, g, c


def test_serving_clusters_start_ray_with_the_serve_environment():
    """Serve's HAProxy ingress is read from the environment Ray starts with: every container of the
    manifests a Serve app runs on, and every node of the cluster launcher config, sets it as a local
    Ray does (runtime.SERVE_ENVIRONMENT)."""
    from htr_ray.distributed.runtime import SERVE_ENVIRONMENT

    serving = {"rayservice.yaml", "raycluster.yaml"}
    seen = set()
    for name, group, _, c in ray_containers():
        if name in serving:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for key, value in SERVE_ENVIRONMENT.items():
                assert env.get(key) == value, f"{name} {group}: {key} is {env.get(key)!r}, want {value!r}"
            seen.add(name)
    assert seen == serving
    launcher = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(launcher[commands])
        for key, value in SERVE_ENVIRONMENT.items():
            assert f"{key}={value}" in start, f"cluster/aws.yaml {commands} does not set {key}={value}"


def test_head_takes_no_work_and_autoscaling_is_on():
    for name, _, doc in ray_manifests():
        for cspec in cluster_specs(doc):
            assert cspec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", name
            assert cspec.get("enableInTreeAutoscaling") is True, name
            assert "resources" in cspec.get("autoscalerOptions", {}), name
            assert cspec.get("rayVersion") == _installed_ray_version(), name
            # Ray 2.60 clusters expect token auth; KubeRay then generates and injects the token.
            assert cspec.get("authOptions", {}).get("mode") == "token", name
            names = [g for g, _ in groups(cspec)]
            assert {"cpu", "gpu"} <= set(names), f"{name}: worker groups {names}"


def test_every_container_has_resources_and_the_project_image():
    version = _project_version()
    seen = 0
    for name, group, g, c in ray_containers():
        seen += 1
        image, _, tag = c["image"].rpartition(":")
        assert image == IMAGE_REPO and tag.startswith(version), f"{name}/{group}: image {c['image']}"
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                assert res in c.get("resources", {}).get(kind, {}), f"{name}/{group}: no {kind}.{res}"
        if group == "gpu":
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1, name
            pod = g["template"]["spec"]
            assert pod.get("nodeSelector") and pod.get("tolerations"), f"{name}: GPU pods need nodeSelector/tolerations"
            assert tag.endswith("-cuda"), f"{name}/{group}: the GPU group needs the CUDA build, got {c['image']}"
        else:
            assert "nvidia.com/gpu" not in c["resources"]["limits"], f"{name}/{group}"
    assert seen >= 4 * 3
    for name, _, doc in ray_manifests():
        if doc["kind"] == "RayJob":
            sub = doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
            assert {"requests", "limits"} <= set(sub["resources"]), name
            assert doc["spec"]["shutdownAfterJobFinishes"] is True
            assert doc["spec"]["ttlSecondsAfterFinished"] > 0


def test_s3_credentials_come_from_the_secret_in_every_ray_container():
    for name, group, _, c in ray_containers():
        env = {e["name"]: e for e in c.get("env", [])}
        for var in S3_VARS:
            assert var in env, f"{name}/{group}: {var} missing"
            ref = env[var].get("valueFrom", {}).get("secretKeyRef")
            assert ref and ref["name"] == S3_SECRET and ref["key"] == var, f"{name}/{group}: {var} is not from {S3_SECRET}"
            assert "value" not in env[var], f"{name}/{group}: {var} has a literal value"
    (secret,) = [d for n, _, d in manifests() if d.get("kind") == "Secret"]
    assert secret["metadata"]["name"] == S3_SECRET and secret["apiVersion"] == "v1"
    assert set(S3_VARS) <= set(secret["stringData"])


# --------------------------------------------------------------------------- entry points

JOB_RE = re.compile(r"python3?\s+(?:\S*/)?jobs/(\w+)\.py")


def _commands_in_text(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        for m in JOB_RE.finditer(line):
            rest = line[m.start():]
            rest = re.split(r"\s(?:&&|\|\||;|\|)\s|[`#]", rest)[0]
            cmds.append(rest.strip())
    return cmds


def entrypoint_commands() -> list[tuple[str, str]]:
    """(where, command) for every `python jobs/X.py ...` in k8s/, cluster/ and docs/deploy.md."""
    out = []
    for name, _, doc in ray_manifests():
        if doc["kind"] == "RayJob":
            out.append((f"k8s/{name}", doc["spec"]["entrypoint"]))
    files = [*K8S.glob("*.md"), *CLUSTER.glob("*"), REPO / "docs" / "deploy.md"]
    for path in files:
        if path.is_file() and path.suffix in (".md", ".yaml", ".sh", "") and path.name != "Dockerfile":
            text = path.read_text()
            if path.suffix == ".md":  # commands are in fenced blocks; prose only names the scripts
                text = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S))
            for cmd in _commands_in_text(text):
                out.append((str(path.relative_to(REPO)), cmd))
    return out


def job_parser(script: str):
    """The job's own parser: its build_parser(), or htr_ray.config.build_parser(<its config dataclass>)."""
    path = REPO / "jobs" / f"{script}.py"
    if not path.is_file():
        pytest.fail(f"jobs/{script}.py is named in the deployment files but does not exist")
    spec = importlib.util.spec_from_file_location(f"_deploy_check_jobs_{script}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(REPO))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO))
    if callable(getattr(module, "build_parser", None)):
        import inspect

        fn = module.build_parser
        if not [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]:
            return fn()
    from htr_ray import config

    configs = [v for k, v in vars(module).items()
               if isinstance(v, type) and dataclasses.is_dataclass(v) and k.lower().endswith("config")]
    if len(configs) != 1:
        pytest.fail(f"jobs/{script}.py has no build_parser() and not exactly one *Config dataclass: {configs}")
    return config.build_parser(configs[0])


def test_entrypoints_are_found():
    scripts = {JOB_RE.search(cmd).group(1) for _, cmd in entrypoint_commands()}
    assert {"train", "transcribe"} <= scripts


@pytest.mark.parametrize("where,command", entrypoint_commands(), ids=lambda v: v if "/" in v and " " not in v else None)
def test_entrypoint_parses_with_the_jobs_own_parser(where, command):
    argv = shlex.split(command)
    script = JOB_RE.search(command).group(1)
    i = next(k for k, a in enumerate(argv) if a.endswith(f"jobs/{script}.py"))
    parser = job_parser(script)
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            args = parser.parse_args(argv[i + 1:])
    except SystemExit as e:
        if e.code in (0, None):  # --help
            return
        pytest.fail(f"{where}: `{command}` is rejected by jobs/{script}.py's parser:\n{err.getvalue()}")
    if script == "train":  # --model is a free string to argparse: it must name a registered architecture
        from htr_ray import models

        assert args.model in models.available(), f"{where}: --model {args.model} not in {models.available()}"


# --------------------------------------------------------------------------- Serve

def _serve_config() -> dict:
    if not SERVE_CONFIG.is_file():
        pytest.fail("serve_config.yaml (the Ray Serve config at the repo root) does not exist yet")
    return yaml.safe_load(SERVE_CONFIG.read_text())


def test_serve_config_loads_with_ray_serves_schema():
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeDeploySchema.model_validate(_serve_config())
    assert cfg.applications, "serve_config.yaml has no application"
    for app in cfg.applications:
        module, _, attr = app.import_path.replace(":", ".").rpartition(".")
        assert hasattr(importlib.import_module(module), attr), f"{app.import_path} does not exist"
        for dep in app.deployments or []:
            auto = dep.autoscaling_config
            if isinstance(auto, dict):
                # AutoscalingConfig silently ignores unknown keys (DESIGN.md): a typo would do nothing.
                unknown = set(auto) - set(AutoscalingConfig.model_fields)
                assert not unknown, f"{dep.name}: autoscaling_config keys Ray ignores: {unknown}"


def test_rayservice_embeds_the_projects_serve_config():
    (svc,) = [d for _, _, d in ray_manifests() if d["kind"] == "RayService"]
    embedded = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert embedded == _serve_config(), (
        "k8s/rayservice.yaml spec.serveConfigV2 differs from serve_config.yaml; paste the file in again")


# --------------------------------------------------------------------------- cluster launcher + image

def _installed_ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def _launcher_config() -> dict:
    path = CLUSTER / "aws.yaml"
    assert path.is_file(), "cluster/aws.yaml is missing"
    return yaml.safe_load(path.read_text())


def test_cluster_launcher_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _launcher_config()
    validate_config(prepare_config(copy.deepcopy(raw)))  # what `ray up` runs before it calls AWS
    types = raw["available_node_types"]
    head = raw["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0, "the head should take no work"
    workers = {k: v for k, v in types.items() if k != head}
    assert any(v["resources"].get("GPU", 0) >= 1 for v in workers.values()), "no GPU worker type"
    assert any(v["resources"].get("GPU", 0) == 0 for v in workers.values()), "no CPU worker type"
    for v in workers.values():
        assert v["max_workers"] >= v["min_workers"] >= 0
    docker_image = raw.get("docker", {}).get("image", "")
    assert docker_image.startswith(IMAGE_REPO + ":") or any("pip install" in c for c in raw.get("setup_commands", []))


def test_cluster_launcher_typo_is_caught():
    import jsonschema as js
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _launcher_config()
    bad = copy.deepcopy(raw)
    worker = next(k for k in bad["available_node_types"] if k != bad["head_node_type"])
    bad["available_node_types"][worker]["min_worker"] = bad["available_node_types"][worker].pop("min_workers")
    with pytest.raises(js.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    bad["idle_timeout_minute"] = 5
    with pytest.raises(js.ValidationError):
        validate_config(prepare_config(bad))


def test_dockerfile_builds_on_the_matching_official_ray_image():
    text = (CLUSTER / "Dockerfile").read_text()
    ray_version = _installed_ray_version()
    py = "py%d%d" % sys.version_info[:2]
    base = re.search(r"^ARG\s+BASE_IMAGE=(\S+)", text, re.M)
    assert base, "Dockerfile: ARG BASE_IMAGE=rayproject/ray:<ray>-<py> expected"
    assert base.group(1) == f"rayproject/ray:{ray_version}-{py}", base.group(1)
    assert re.search(r"^FROM\s+\$\{?BASE_IMAGE\}?", text, re.M)
    assert "pip install" in text and re.search(r"torch==", text)
    assert re.search(r"^COPY\b.*(\bmodels\b|\s\.\s+\S+\s*$)", text, re.M), "models/ is not copied into the image"
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    for needed in ("models", "jobs", "htr_ray", "serve_config.yaml"):
        assert not any(p.strip("/") == needed for p in ignored), f"{needed} is excluded from the build context"
    for heavy in (".venv", "work/", "data/", ".git"):
        assert heavy in ignored, f"{heavy} would be sent to the docker daemon"


def test_entrypoint_check_rejects_a_wrong_flag():
    """The parser check is not a formality: a flag the job does not have is refused."""
    parser = job_parser("transcribe")
    with redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
        parser.parse_args(["--input", "s3://a/", "--output", "s3://b/", "--wokers", "2"])
    assert e.value.code != 0


def test_embed_serve_config_rewrites_only_the_block():
    """k8s/embed_serve_config.py (the way to resync after editing serve_config.yaml) round-trips."""
    spec = importlib.util.spec_from_file_location("_embed_serve_config", K8S / "embed_serve_config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    manifest = (K8S / "rayservice.yaml").read_text()
    new_config = "applications:\n  - name: other\n    import_path: htr_ray.distributed.serve:build_app\n\n    route_prefix: /x\n"
    out = mod.embed(manifest, new_config)
    doc = yaml.safe_load(out)
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == yaml.safe_load(new_config)
    before = yaml.safe_load(manifest)
    del doc["spec"]["serveConfigV2"], before["spec"]["serveConfigV2"]
    assert doc == before
