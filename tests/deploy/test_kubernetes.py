"""The kustomize package in deploy/: rendered with `kubectl kustomize` as a user would, every object checked
against the Kubernetes schemas (kubernetes-validate, strict: an unknown field fails), the ServiceMonitor (a
CRD those schemas lack) field by field, and every port, path, flag and variable checked against the daemon.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler import __version__
from reconciler.daemon.parts import HTTP_SHUTDOWN_GRACE, SHUTDOWN_GRACE
from reconciler.listen import parse_listen
from reconciler.state import open_state, sqlite_path
from tests.deploy.daemon_facts import ROOT, check_run_args, env_names, http_paths
from tests.state.helpers import make_record

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: `kubectl kustomize` renders deploy/")

Objects = dict[str, dict[str, Any]]  # by kind (each package has one object of each kind)


def render(overlay: str) -> Objects:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / overlay)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    objects: Objects = {}
    for doc in yaml.safe_load_all(out):
        assert doc["kind"] not in objects, f"two {doc['kind']} objects"
        objects[doc["kind"]] = doc
    return objects


PACKAGES = ["base", "overlays/single-replica"]


@pytest.fixture(scope="module", params=PACKAGES)
def package(request: pytest.FixtureRequest) -> Objects:
    return render(request.param)


def container(objects: Objects, name: str) -> dict[str, Any]:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_object_is_valid_against_the_kubernetes_schemas(package: Objects) -> None:
    version = kubernetes_validate.latest_version()
    for kind, obj in package.items():
        if kind == "ServiceMonitor":
            continue  # a CRD: checked field by field below
        kubernetes_validate.validate(obj, version, strict=True)  # raises, naming the field


def test_the_schema_check_catches_a_wrong_field() -> None:
    """The validation above can fail: a misspelt probe field is refused."""
    deployment = render("base")["Deployment"]
    container_spec = deployment["spec"]["template"]["spec"]["containers"][0]
    container_spec["readinessProbe"]["httpGett"] = container_spec["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


# The ServiceMonitor fields this package uses, from the prometheus-operator's monitoring.coreos.com/v1 API.
SERVICE_MONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme"}


def test_service_monitor_scrapes_the_daemons_metrics_port(package: Objects) -> None:
    monitor, service = package["ServiceMonitor"], package["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT, endpoint
        assert endpoint["port"] in service_ports
        assert endpoint["path"] in http_paths()
        assert endpoint["interval"][:-1].isdigit() and endpoint["interval"][-1] in "sm"


def test_ports_paths_flags_and_variables_exist_in_the_daemon(package: Objects) -> None:
    capctl = container(package, "capctl")
    port, paths = check_run_args(capctl["args"])
    assert capctl["args"][capctl["args"].index("--listen") + 1].startswith("0.0.0.0:"), "reachable from the pod IP"
    ports = {p["name"]: p["containerPort"] for p in capctl["ports"]}
    assert ports == {"http": port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = capctl[probe]["httpGet"]
        assert get["path"] in http_paths() and get["port"] in ports, probe
    assert capctl["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert capctl["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Variables the daemon reads itself, or that a flag of its names (`--status-token-ref env:NAME`).
    referenced = {a.removeprefix("env:") for a in capctl["args"] if a.startswith("env:")}
    assert {e["name"] for e in capctl["env"]} <= env_names() | referenced
    # The specs the daemon reads are the ones git-sync publishes: --root and --link make /specs/current.
    sync_args = dict(a.removeprefix("--").split("=", 1) for a in container(package, "git-sync")["args"])
    mount = next(m["mountPath"] for m in capctl["volumeMounts"] if m["name"] == "specs")
    assert sync_args["root"] == mount and paths == [f"{mount}/{sync_args['link']}"]
    service = package["Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert {p["port"] for r in package["NetworkPolicy"]["spec"]["ingress"] for p in r["ports"]} <= set(ports)


def test_sync_wake_and_the_status_page_need_tokens_from_secrets_the_pod_waits_for(package: Objects) -> None:
    """The pods listen on 0.0.0.0, where the daemon makes no loopback check: an optional sync token left a pod
    behind `kubectl port-forward` open to a DNS-rebound web page syncing and waking tasks (walk 20c/21e)."""
    capctl = container(package, "capctl")
    env = [e for e in capctl["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    status = capctl["args"][capctl["args"].index("--status-token-ref") + 1].removeprefix("env:")
    for name in ("CAPCTL_SYNC_TOKEN", status):
        assert refs[name]["name"] and refs[name].get("optional", False) is False, name


def test_pods_are_selected_by_the_service_and_budget(package: Objects) -> None:
    labels = package["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert matches(package["Service"]["spec"]["selector"], labels)
    assert matches(package["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    if "PodDisruptionBudget" in package:
        assert matches(package["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)


def test_pods_run_unprivileged_on_a_read_only_root(package: Objects) -> None:
    pod = package["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


def test_the_image_is_this_version_of_capctl() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert container(render("base"), "capctl")["image"] == f"capctl:{__version__}"  # an overlay names the registry
    assert project["version"] == __version__


def test_base_runs_two_replicas_spread_and_protected() -> None:
    objects = render("base")
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 2
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["labelSelector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    # A state-store outage makes both replicas unready (/readyz 503): the default policy would then refuse
    # every eviction of them, and a node drain would wait for the database.
    assert objects["PodDisruptionBudget"]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_a_terminating_replica_pauses_for_the_endpoints_then_stops_within_its_grace() -> None:
    """The preStop pause covers the time every node's proxy takes to drop the pod from the Service (a
    callback routed to it meanwhile still finds the daemon listening); the pause and capctl's own shutdown
    (in-flight vendor calls, then open requests) fit in the grace period before the kubelet's SIGKILL."""
    objects = render("base")
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    sleep, seconds = container(objects, "capctl")["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "/bin/sleep" and float(seconds) >= 2
    assert float(seconds) + SHUTDOWN_GRACE + HTTP_SHUTDOWN_GRACE < pod["terminationGracePeriodSeconds"]


def test_single_replica_overlay_keeps_its_sqlite_state_on_a_volume() -> None:
    """One replica, Recreate, no budget that would block a drain, and a SQLite state the read-only pod can
    write: on the overlay's own PersistentVolumeClaim, with no PostgreSQL Secret needed."""
    objects = render("overlays/single-replica")
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert "PodDisruptionBudget" not in objects
    capctl = container(objects, "capctl")
    assert "lifecycle" not in capctl  # no other pod to route callbacks to: a preStop pause would only add downtime
    url = next(e for e in capctl["env"] if e["name"] == "CAPCTL_STATE")["value"]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mount = next(m for m in capctl["volumeMounts"] if m["mountPath"] == str(Path(sqlite_path(url)).parent))
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == claim and not mount.get("readOnly")
    assert objects["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def guide_yaml(after: str) -> str:
    """The first YAML block of docs/operations.md after the text `after`, dedented."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", guide[guide.index(after) :], re.S)
    assert block is not None
    return textwrap.dedent(block.group(1))


def render_guide_overlay(tmp_path: Path, *, patches: str = "") -> Objects:
    """docs/operations.md's own overlay, with more entries for its `patches` (a guide's block, `guide_yaml`),
    rendered as a user would next to a copy of deploy/."""
    text = guide_yaml("3. An overlay of your own") + textwrap.indent(patches, "  ")
    overlay = tmp_path / "my-capctl"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(text)
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=True, timeout=60)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out.stdout)}


def test_the_overlay_in_the_install_guide_sets_image_repository_and_namespace(tmp_path: Path) -> None:
    objects = render_guide_overlay(tmp_path)
    assert {obj["metadata"]["namespace"] for obj in objects.values()} == {"capture"}
    assert container(objects, "capctl")["image"] == f"registry.example.com/capctl:{__version__}"
    assert container(objects, "git-sync")["args"][0] == "--repo=https://git.example.com/media/capture-specs"
    # The daemon applies what the pull request's plan showed: the directory the CI examples plan, in git-sync's link.
    planned = yaml.safe_load((ROOT / "action.yml").read_text())["inputs"]["paths"]["default"]
    assert container(objects, "capctl")["args"][:2] == ["run", f"/specs/current/{planned}"]
    # The guide installs the base: 2 replicas with leader election (issue 16), protected by the PDB.
    assert objects["Deployment"]["spec"]["replicas"] == 2 and "PodDisruptionBudget" in objects


def test_every_secret_the_packages_read_is_created_by_the_install_guide_with_its_keys() -> None:
    """Install step 2's `kubectl create secret` lines against the rendered packages' references: a Secret or key
    named differently leaves the pod waiting (CreateContainerConfigError); a token read back from a Secret the
    guide does not create prints nothing. The single-replica overlay needs all of them but `capctl-state`."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    step = guide[guide.index("2. The Secrets the package references") : guide.index("\n3. An overlay of your own")]
    created: dict[str, set[str]] = {}
    for name, options in re.findall(
        r"kubectl create secret generic (\S+)((?: \\\n)?.*?)(?=\n   kubectl|\n   ```)", step, re.S
    ):
        created[name] = set(re.findall(r"--from-literal=([A-Za-z0-9_]+)=", options))
    for name, key in re.findall(r"kubectl get secret (\S+) -o jsonpath='\{\.data\.(\w+)\}'", guide):
        assert key in created.get(name, set()), (
            f"operations.md reads {name}/{key}, which Install step 2 does not create"
        )
    for overlay in PACKAGES:
        capctl = container(render(overlay), "capctl")
        refs = [e["valueFrom"]["secretKeyRef"] for e in capctl["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        for ref in refs:
            assert ref["key"] in created.get(ref["name"], set()), f"{overlay} reads {ref}, which Install step 2 lacks"
        needed = {ref["name"] for ref in refs} | {s["secretRef"]["name"] for s in capctl.get("envFrom", [])}
        assert set(created) - needed == ({"capctl-state"} if overlay != "base" else set()), overlay
        assert needed <= set(created) and all(created.values()), overlay


def test_the_install_guides_patch_drops_the_service_monitor_and_nothing_else(tmp_path: Path) -> None:
    """Without the Prometheus Operator's CRD, `kubectl apply -k` fails on the ServiceMonitor: the guide said to
    delete it from the base's `resources`, a file an overlay of your own does not hold; its patch does it."""
    objects = render_guide_overlay(tmp_path, patches=guide_yaml("Drop it with one more entry"))
    assert set(objects) == set(render("base")) - {"ServiceMonitor"}


def test_the_install_guides_no_status_page_patch_serves_none_and_needs_no_status_token_secret(tmp_path: Path) -> None:
    """ "Patch the args to --no-status-page" named no patch, and the pod kept waiting for the capctl-status-token
    Secret (its variable's secretKeyRef) the operator who wants no page would not create."""
    objects = render_guide_overlay(tmp_path, patches=guide_yaml("To serve no page at all"))
    daemon = container(objects, "capctl")
    assert daemon["args"] == [
        "run",
        "/specs/current/specs",
        "--listen",
        "0.0.0.0:8080",
        "--resync",
        "30s",
        "--no-status-page",
    ]
    assert "CAPCTL_STATUS_TOKEN" not in {e["name"] for e in daemon["env"]}
    assert "capctl-status-token" not in json.dumps(objects)
    assert {e["name"] for e in daemon["env"]} == {e["name"] for e in container(render("base"), "capctl")["env"]} - {
        "CAPCTL_STATUS_TOKEN"
    }


def test_the_single_replica_backup_in_the_guide_copies_a_running_state(tmp_path: Path) -> None:
    """The guide said "back it up with SQLite's backup API", and state.md's `sqlite3 … .backup`: the image has no
    sqlite3 command, and a plain copy of a running state misses the commits still in its -wal (it reads as empty).
    The guide's command runs in the pod (`kubectl exec`) on the overlay's state file and copies every commit."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    step = guide[guide.index("With the single-replica overlay, the state is") :]
    block = re.search(r"```sh\n(.*?)```", step, re.S)
    assert block is not None
    exec_ = re.fullmatch(r"\(umask 077; kubectl exec deploy/capctl -c capctl -- (.*) > (.+)\)\n", block.group(1))
    assert exec_ is not None, block.group(1)
    command = shlex.split(exec_.group(1))
    url = next(e for e in container(render("overlays/single-replica"), "capctl")["env"] if e["name"] == "CAPCTL_STATE")
    in_pod = sqlite_path(url["value"])
    assert command[:2] == ["python", "-c"] and in_pod in command[2]
    # A running daemon's state: its commits are still in state.db-wal while it holds the file open.
    state = tmp_path / "state.db"
    store = open_state(f"sqlite:///{state}")
    try:
        store.put(make_record("SnapshotJob/a/lobby"))
        plain = tmp_path / "plain.db"
        shutil.copyfile(state, plain)
        copied = open_state(f"sqlite:///{plain}")
        assert copied.record("SnapshotJob/a/lobby") is None  # what the guide warns of
        copied.close()
        out = subprocess.run(
            [sys.executable, "-c", command[2].replace(in_pod, str(state))], capture_output=True, check=True, timeout=60
        ).stdout
    finally:
        store.close()
    backup = tmp_path / "backup.db"
    backup.write_bytes(out)
    restored = open_state(f"sqlite:///{backup}")
    assert restored.record("SnapshotJob/a/lobby") is not None
    restored.close()
    # A wrong path fails rather than leaving an empty file that capctl would refuse as damaged.
    missing = tmp_path / "nothing" / "state.db"
    wrong = subprocess.run([sys.executable, "-c", command[2].replace(in_pod, str(missing))], capture_output=True)
    assert wrong.returncode != 0 and not wrong.stdout and not missing.exists()


def test_the_guide_reads_every_replica_where_one_pods_answer_would_mislead() -> None:
    """`kubectl logs deploy/capctl` and `kubectl exec deploy/capctl` reach one pod, whichever kubectl picks: with the
    base's two replicas the alert's `grep 'callback rejected'` read the leader's log while the standby had verified
    (and rejected) the callbacks the Service sent it, and step 4 showed one pod's /readyz of the two it promised.
    Only the single-replica backup may name the Deployment (it has one pod)."""
    labels = render("base")["Deployment"]["spec"]["template"]["metadata"]["labels"]
    guide = (ROOT / "docs" / "operations.md").read_text()
    backup = guide.index("With the single-replica overlay, the state is")
    for found in re.finditer(r"kubectl (?:logs|exec) deploy/capctl -c", guide):
        assert found.start() - backup in range(0, 1000), guide[found.start() : found.start() + 80]
    selectors = re.findall(r"kubectl (?:logs|get pods) -l ([\w./-]+=[\w.-]+)", guide)
    assert len(selectors) >= 3
    for selector in selectors:
        key, _, value = selector.partition("=")
        assert labels.get(key) == value, selector
    logs = re.findall(r"kubectl logs -l \S+ (.*?) \\\| grep 'callback rejected'", guide)
    assert logs and all("--tail=-1" in options.split() for options in logs), logs  # a selector's default: 10 lines


def test_the_guides_copy_pod_keeps_the_state_url_out_of_its_command_line(tmp_path: Path) -> None:
    """Going to several replicas, step 3: the copy pod passed the PostgreSQL URL as `--to "$(URL)"`, so its
    password was in the process's arguments (`ps` on the node). `--to` reads CAPCTL_STATE_TO; the pod, run
    as written (the Secret's URL a SQLite file here), copies the volume's state."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    overrides = re.search(r"kubectl run capctl-copy .*?--overrides='(\{.*?\})'\n", guide, re.S)
    assert overrides is not None
    [copy] = json.loads(overrides.group(1))["spec"]["containers"]
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in copy["env"]}
    assert from_secrets and not [a for a in copy["args"] if "$(" in a], copy["args"]
    assert from_secrets == {"CAPCTL_STATE_TO": {"name": "capctl-state", "key": "url"}}
    in_pod = sqlite_path(
        next(e for e in container(render("overlays/single-replica"), "capctl")["env"] if e["name"] == "CAPCTL_STATE")[
            "value"
        ]
    )
    source = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    source.fingerprint_key(b"k" * 32)  # the record's hashes are keyed
    source.put(make_record("SnapshotJob/a/lobby"))
    source.close()
    args = [a.replace(in_pod, str(tmp_path / "state.db")) for a in copy["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPCTL_")}
    env |= {"PYTHONPATH": str(ROOT), "CAPCTL_STATE_TO": f"sqlite:///{tmp_path / 'copy.db'}"}
    done = subprocess.run([sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copied = open_state(f"sqlite:///{tmp_path / 'copy.db'}", create=False)
    assert copied.record("SnapshotJob/a/lobby") is not None
    copied.close()
    # The variable is no default: an empty one is refused as unset, without "leave it out for the default".
    wide = env | {"COLUMNS": "200"}  # the error's box unwrapped
    empty = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--to", ""], env=wide, capture_output=True, text=True
    )
    assert empty.returncode == 1 and "'' names no state (an unset variable?) " in empty.stderr, empty.stderr
    assert "leave it out" not in empty.stderr


def test_going_back_to_one_replica_removes_what_the_base_leaves_behind() -> None:
    """`kubectl apply -k` of the single-replica overlay over the base deletes nothing: the base's
    PodDisruptionBudget stayed, and with one replica its `minAvailable: 1` refused every eviction (a node drain
    never ended), what the overlay drops it for. The guide's way back deletes every object the overlay lacks
    that selects its pod."""
    base, single = render("base"), render("overlays/single-replica")
    pod = single["Deployment"]["spec"]["template"]["metadata"]["labels"]
    left = {
        (kind, obj["metadata"]["name"])
        for kind, obj in base.items()
        if kind not in single and matches(obj["spec"].get("selector", {}).get("matchLabels", {"-": "-"}), pod)
    }
    assert left == {("PodDisruptionBudget", "capctl")}
    guide = (ROOT / "docs" / "operations.md").read_text()
    back = guide[guide.index("Going back is the same copy the other way") : guide.index("### Resources")]
    deleted = set(re.findall(r"kubectl delete (\w+) (\S+)", back))
    assert {(kind.lower(), name) for kind, name in left} <= deleted


def test_a_failed_fetch_of_the_spec_repository_keeps_git_sync_running(package: Objects) -> None:
    """git-sync's `--max-failures` (default 0: the first failed fetch exits) counts consecutive failures before it
    exits; a container that exits makes its pod unready until it runs again (CrashLoopBackOff), so a git host's
    blip or outage took the replicas out of the Service, and the vendors' callbacks with them, while the daemon
    still held a valid spec set. -1: after the first sync it retries for ever, on the last commit it had."""
    sync_args = dict(a.removeprefix("--").split("=", 1) for a in container(package, "git-sync")["args"])
    assert sync_args.get("max-failures") == "-1"
    assert container(package, "git-sync").get("readinessProbe") is None  # ready while it runs


def test_the_install_guides_ipv6_patch_listens_on_every_address_of_both_families(tmp_path: Path) -> None:
    """`--listen 0.0.0.0:8080` listens on no IPv6 address: in an IPv6-only cluster (the pod's one address IPv6)
    every probe was refused and the startup probe restarted the container for ever. The guide's patch gives
    `[::]`, the wildcard of both families, on the same port, and changes nothing else."""
    objects = render_guide_overlay(tmp_path, patches=guide_yaml("An IPv6-only cluster"))
    args = container(objects, "capctl")["args"]
    port, _ = check_run_args(args)
    assert parse_listen(args[args.index("--listen") + 1], example="[::]:8080") == ("::", port)
    (tmp_path / "plain").mkdir()
    base = container(render_guide_overlay(tmp_path / "plain"), "capctl")["args"]
    assert [a for a in args if a not in base] == [f"[::]:{port}"] and len(args) == len(base)
