"""A real one-node Kubernetes on this machine: real pods, probes, Jobs, Services.

etcd, kube-apiserver (Node,RBAC + NodeRestriction), kube-controller-manager,
kube-scheduler, containerd (runc, CNI bridge), the kubelet and kube-proxy (iptables),
all v1.20.2 from scripts/setup-envtest.sh, with certificates and tokens made per run.
Images come from :mod:`tasks.cluster.localnode.images` (no registry). The facts and workarounds
behind each setting are in the shared reference ("A real node on this machine").

Where traffic goes: the API server and every control-plane port listen on 127.0.0.1;
the node has one address of its own, ``NODE_IP`` (a /32 added to ``lo``, since the
kubelet refuses a loopback node IP); pods live on the ``cni0`` bridge with routes only
to the node address and the Service range (no default route, no masquerade, an empty
resolv.conf), and a POSTROUTING rule drops Service/pod addresses that were not
translated to a pod on the bridge. Nothing is routed off the machine.

What it leaves behind: nothing. :meth:`Node.stop` (also run at exit, and on a stale state
file left by a killed run) kills every process it started by PID and everything in the
``kubepods`` cgroups, unmounts what is under its scratch folder, deletes the bridge, the
``lo`` address and the KUBE-*/CNI-* iptables chains, restores the sysctls the kubelet,
kube-proxy and the bridge plugin change, and removes the folders it created.

``python -m tasks.cluster.localnode.node up`` runs a node in the foreground until interrupted
(scripts/up uses it where Docker and kind are missing).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tasks.cluster.localnode import envtest, images
from tasks.cluster.localnode.envtest import free_port, issue, write_pair

NODE_NAME = "vibecode-node"
NODE_IP = "10.254.254.1"  # a private /32 on lo, away from this machine's own 10.255.255.x resolver
CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"  # the first /24 the controller-manager allocates to the only node
SERVICE_CIDR = "10.96.0.0/24"
BRIDGE = "cni0"
STORAGE_CLASS = "vibecode-local"
GUARD_CHAIN = "VIBECODE-NODE-GUARD"
LOCK = Path("/run/lock/vibecode-node.lock")
STATE = Path("/run/vibecode-node.json")
NODE_BINARIES = ("kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip6tables", "conntrack", "ip",
              "umoci", "skopeo", "gcc")
# Sysctls changed by the kubelet (kernel tunables), kube-proxy and the CNI bridge plugin:
# read before the node starts and written back after it stops.
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables",
           "net/bridge/bridge-nf-call-ip6tables", "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic",
           "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
HOST_DIRS = ("/var/log/pods", "/var/log/containers", "/var/lib/cni", "/run/containerd", "/etc/cni",
             "/opt/cni", "/var/lib/kubelet", "/usr/libexec/kubernetes")


def log(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


def unavailable() -> str | None:
    """Why this machine cannot run the node, or None. Checks only; builds nothing."""
    if platform.system() != "Linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (containerd, runc, the bridge, iptables)"
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "no cgroups (memory controller) on this machine"
    missing = [t for t in HOST_TOOLS if not shutil.which(t)]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("/usr/lib/cni/bridge")
    if missing:
        return f"missing {', '.join(missing)}: run scripts/setup-node.sh"
    assets = os.environ.get("KUBEBUILDER_ASSETS") or str(Path.home() / ".cache/vibecode/envtest/1.20.2")
    absent = [b for b in NODE_BINARIES if not (Path(assets) / b).exists()]
    if absent:
        return f"missing {', '.join(absent)} in {assets}: run scripts/setup-envtest.sh"
    return None


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: {proc.stderr.strip()[-1500:]}")
    return proc


def _kubeconfig(path: Path, url: str, ca: Path, user: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "node", "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": "node-user", "user": user}],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": "node-user"}}]}))
    path.chmod(0o600)
    return path


def _cert_kubeconfig(d: Path, stem: str, url: str, ca, ca_key, cn: str, orgs: tuple[str, ...] = ()) -> Path:
    write_pair(d, stem, *issue(ca, ca_key, cn, orgs))
    return _kubeconfig(d / f"{stem}.kubeconfig", url, d / "ca.crt",
                       {"client-certificate": str(d / f"{stem}.crt"), "client-key": str(d / f"{stem}.key")})


def _containerd_config(d: Path) -> Path:
    """``containerd config default`` with everything moved under ``d``; see the module docstring."""
    text = _sh("containerd", "config", "default").stdout
    subs = [
        ('root = "/var/lib/containerd"', f'root = "{d}/containerd/root"'),
        ('state = "/run/containerd"', f'state = "{d}/containerd/state"'),
        ('address = "/run/containerd/containerd.sock"', f'address = "{d}/containerd/containerd.sock"'),
        ('sandbox_image = "registry.k8s.io/pause:3.6"', f'sandbox_image = "{images.pause_image().name}"'),
        ('bin_dir = "/opt/cni/bin"', 'bin_dir = "/usr/lib/cni"'),
        ('conf_dir = "/etc/cni/net.d"', f'conf_dir = "{d}/cni/net.d"'),
        ('restrict_oom_score_adj = false', 'restrict_oom_score_adj = true'),
        ('netns_mounts_under_state_dir = false', 'netns_mounts_under_state_dir = true'),
        ('path = "/opt/containerd"', f'path = "{d}/containerd/opt"'),
    ]
    for old, new in subs:
        if old not in text:
            raise RuntimeError(f"containerd's default config has changed: no {old!r}")
        text = text.replace(old, new, 1)
    # runc's state under the scratch folder too (the runc runtime's options.Root).
    marker = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]'
    head, _, tail = text.partition(marker)
    tail = tail.replace('Root = ""', f'Root = "{d}/containerd/runc"', 1)
    text = head + marker + tail
    if "SystemdCgroup = false" not in text:
        raise RuntimeError("containerd's default config has no SystemdCgroup = false")
    path = d / "containerd.toml"
    path.write_text(text)
    return path


def _cni_config(d: Path) -> None:
    (d / "cni/net.d").mkdir(parents=True)
    (d / "cni/net.d/10-vibecode.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "vibecode",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "dataDir": f"{d}/cni/ipam",
                      # No default route: pods reach the node address and Services, nothing else.
                      "routes": [{"dst": f"{NODE_IP}/32"}, {"dst": SERVICE_CIDR}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))


@dataclass
class Node:
    workdir: Path
    url: str = ""
    kubeconfig: Path = Path()
    token: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    host_dirs: dict[str, bool] = field(default_factory=dict)
    lo_added: bool = False
    ctr: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # short name -> image reference
    timings: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    _lock_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logf = open(self.workdir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=logf, start_new_session=True)
        self.procs[name] = proc
        self._save_state()
        return proc

    def _save_state(self) -> None:
        STATE.write_text(json.dumps({"workdir": str(self.workdir), "pids": {k: p.pid for k, p in self.procs.items()},
                                     "sysctls": self.sysctls, "host_dirs": self.host_dirs,
                                     "lo_added": self.lo_added}))

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        started = time.monotonic()
        _cleanup(self.workdir, {k: p.pid for k, p in self.procs.items()}, self.sysctls, self.host_dirs,
                 self.lo_added)
        for p in self.procs.values():
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        STATE.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log(f"stopped and cleaned up in {time.monotonic() - started:.1f}s")

    # -- helpers for tests --------------------------------------------------------------
    def pv_path(self, pv_name: str) -> Path:
        return self.workdir / "pv" / pv_name


# -- clean-up (shared by stop, atexit and the stale-state path) ---------------------------
def _kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kubepods_cgroups() -> list[Path]:
    """Every kubepods cgroup, deepest first. Pods' cgroups vanish while we walk (the
    containers we just killed): os.walk skips a folder that is gone, rglob raised."""
    found = []
    for root in Path("/sys/fs/cgroup").iterdir():
        base = root / "kubepods"
        if base.is_dir():
            found += sorted((Path(d) for d, _, _ in os.walk(base)), key=lambda p: -len(p.parts))
    return found


def _cleanup(workdir: Path, pids: dict[str, int], sysctls: dict[str, str], host_dirs: dict[str, bool],
             lo_added: bool) -> None:
    order = ["kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"]
    for name in order:
        if name in pids:
            _kill_pid(pids[name], signal.SIGTERM)
    time.sleep(0.5)
    for name in order:
        if name in pids:
            _kill_pid(pids[name])
    # Every container process: whatever is in the kubepods cgroups.
    for _ in range(3):
        procs = set()
        for cg in _kubepods_cgroups():
            try:
                procs |= {int(x) for x in (cg / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        for pid in procs:
            _kill_pid(pid)
        if not procs:
            break
        time.sleep(0.3)
    # containerd, then its shims (they name our socket on their command line).
    if "containerd" in pids:
        _kill_pid(pids["containerd"], signal.SIGTERM)
        time.sleep(0.5)
        _kill_pid(pids["containerd"])
    sock = str(workdir / "containerd" / "containerd.sock")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                _kill_pid(int(proc.name))
    for name in ("kube-apiserver", "etcd"):
        if name in pids:
            _kill_pid(pids[name], signal.SIGTERM)
    time.sleep(0.3)
    for name in ("kube-apiserver", "etcd"):
        if name in pids:
            _kill_pid(pids[name])
    # Mounts under the scratch folder, deepest first (overlay rootfs, shm, netns, secrets...).
    for _ in range(3):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        mine = sorted({m for m in mounts if m.startswith(str(workdir) + "/")}, key=len, reverse=True)
        for m in mine:
            subprocess.run(["umount", "-l", m], capture_output=True)
        if not mine:
            break
    for cg in _kubepods_cgroups():
        try:
            cg.rmdir()
        except OSError:
            pass
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    if lo_added:
        subprocess.run(["ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo"], capture_output=True)
    for tool in ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"):
        if shutil.which(tool):
            _clean_chains(tool)
    for key, value in sysctls.items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError:
            pass
    for d, existed in host_dirs.items():
        if not existed:
            shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _ours(chain: str) -> bool:
    return chain.startswith(("KUBE-", "CNI-", GUARD_CHAIN))


def _clean_chains(tool: str) -> None:
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
        for rule in rules:
            parts = shlex.split(rule)
            if parts[:1] == ["-A"] and "-j" in parts and _ours(parts[parts.index("-j") + 1]) and not _ours(parts[1]):
                subprocess.run([tool, "-w", "-t", table, "-D", *parts[1:]], capture_output=True)
        chains = [r.split()[1] for r in rules if r.startswith("-N ") and _ours(r.split()[1])]
        for chain in chains:
            subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True)
        for chain in chains:
            subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True)


def cleanup_stale() -> None:
    """A previous run was killed before it could clean up: do it now from its state file."""
    if not STATE.exists():
        return
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        state = {}
    log(f"cleaning up after a previous run that did not stop: {state.get('workdir')}")
    if state.get("workdir"):
        _cleanup(Path(state["workdir"]), state.get("pids", {}), state.get("sysctls", {}),
                 state.get("host_dirs", {}), state.get("lo_added", False))
    STATE.unlink(missing_ok=True)


# -- start ------------------------------------------------------------------------------
def _wait(what: str, node: Node, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        node.check_alive()
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s: {last}")


def _api(node: Node, path: str, method: str = "GET", body: dict | None = None) -> dict:
    r = httpx.request(method, f"{node.url}{path}", headers={"Authorization": f"Bearer {node.token}"},
                      verify=str(node.workdir / "ca.crt"), json=body, timeout=10)
    if r.status_code == 409 and method == "POST":
        return {}
    r.raise_for_status()
    return r.json()


def namespace_names(node: Node) -> list[str]:
    return [ns["metadata"]["name"] for ns in _api(node, "/api/v1/namespaces")["items"]]


def clear_namespaces(node: Node, keep: set[str], timeout: float = 180) -> tuple[list[str], list[str]]:
    """Delete every namespace not in ``keep`` and wait until their pods are gone; returns
    (deleted, pods still there at ``timeout``). The node has two CPUs: a test's workspaces and
    stores left running hold their CPU requests, and a later test's workspace then stays
    Pending until its rollout's deadline (what the node tests did once run one after another)."""
    gone = [n for n in namespace_names(node) if n not in keep]
    for name in gone:
        try:
            _api(node, f"/api/v1/namespaces/{name}", "DELETE")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (404, 409):
                raise
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in _api(node, "/api/v1/pods")["items"]
                if p["metadata"]["namespace"] in gone]
        if not left or time.monotonic() > deadline:
            return gone, left
        time.sleep(1)


def _scratch_parent() -> str:
    """/dev/shm when it has room (images unpack and clean up several times faster in
    memory), else /var/tmp."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 8 << 30:
            return "/dev/shm"
    except OSError:
        pass
    return "/var/tmp"


def start(code_server: bool = True, pv_count: int = 24, lock_timeout: float = 1800) -> Node:
    """Start the node; on any failure everything started so far is cleaned up."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"cannot run a node here: {reason}")
    t0 = time.monotonic()
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    deadline = time.monotonic() + lock_timeout
    while True:  # one node per machine: the bridge, lo address and iptables chains are global
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"another node holds {LOCK} for more than {lock_timeout:.0f}s") from None
            time.sleep(2)
    cleanup_stale()
    # Images first (cached; a first build takes minutes), so the node's clock starts after.
    imgs = images.all_images(code_server=code_server)
    t_images = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vibecode-node-", dir=_scratch_parent()))
    node = Node(workdir=workdir, _lock_fd=fd)
    node.timings["images"] = t_images - t0
    # By digest where the image has one (the workspace image): a tag alone would be pinned to
    # the lock's digest, the build of the day the lock was written (another day's Debian or npm
    # versions give another digest), and the node would try to pull it.
    node.images = {i.short: f"{i.name}@{i.digest}" if i.digest else i.name for i in imgs}
    node.sysctls = {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS if Path("/proc/sys", k).exists()}
    node.host_dirs = {d: Path(d).exists() for d in HOST_DIRS}
    atexit.register(node.stop)
    try:
        _start(node, imgs, pv_count)
    except BaseException:
        node.stop()
        raise
    node.timings["start"] = time.monotonic() - t_images
    log(f"node {NODE_NAME} Ready at {NODE_IP}; API {node.url}; images {node.timings['images']:.1f}s, "
        f"start {node.timings['start']:.1f}s (image import {node.timings.get('import', 0):.1f}s); scratch {workdir}")
    return node


def _start(node: Node, imgs: list[images.Image], pv_count: int) -> None:
    d = node.workdir
    (d / "logs").mkdir()
    node._save_state()
    assets = envtest.assets_dir()
    ca, ca_key = envtest._certs(d)
    node.token = secrets.token_urlsafe(32)
    (d / "tokens.csv").write_text(f'{node.token},node-admin,node-admin,"system:masters"\n')
    write_pair(d, "apiserver-kubelet-client", *issue(ca, ca_key, "kube-apiserver-kubelet-client", ("system:masters",)))
    write_pair(d, "kubelet-serving", *issue(ca, ca_key, NODE_NAME, ips=(NODE_IP,), dns=(NODE_NAME,)))

    # The node address: a /32 on lo (no dummy device in this kernel; loopback is refused).
    addrs = _sh("ip", "-o", "addr", "show", "dev", "lo").stdout
    if f" {NODE_IP}/32 " not in addrs:
        _sh("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
        node.lo_added = True
        node._save_state()
    _guard_rules()

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    node._spawn("etcd", [
        str(assets / "etcd"), "--data-dir", str(d / "etcd"), "--name", "node",
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"node=http://127.0.0.1:{peer_port}", "--log-level", "error",
        "--unsafe-no-fsync"])
    node._spawn("kube-apiserver", [
        str(assets / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--secure-port={api_port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
        f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
        f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true", "--v=0"])
    node.url = f"https://127.0.0.1:{api_port}"
    envtest._wait_ready(node.url, node.token, d / "ca.crt",
                        [node.procs["etcd"], node.procs["kube-apiserver"]], d / "logs" / "kube-apiserver.log")
    node.kubeconfig = _kubeconfig(d / "admin.kubeconfig", node.url, d / "ca.crt", {"token": node.token})

    # containerd, and the images in it, while the control plane settles.
    for sub in ("containerd/root", "containerd/state", "containerd/opt", "containerd/runc", "pv"):
        (d / sub).mkdir(parents=True)
    _cni_config(d)
    node._spawn("containerd", ["containerd", "--config", str(_containerd_config(d))])
    sock = d / "containerd" / "containerd.sock"
    node.ctr = ["ctr", "--address", str(sock)]
    _wait("containerd", node, lambda: _sh(*node.ctr, "version", check=False).returncode == 0, 30, 0.2)

    cm = _cert_kubeconfig(d, "controller-manager", node.url, ca, ca_key, "system:kube-controller-manager")
    node._spawn("kube-controller-manager", [
        str(assets / "kube-controller-manager"), f"--kubeconfig={cm}", f"--authentication-kubeconfig={cm}",
        f"--authorization-kubeconfig={cm}", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        "--port=0", "--leader-elect=false", "--use-service-account-credentials",
        f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
        "--allocate-node-cidrs", f"--cluster-cidr={CLUSTER_CIDR}", "--node-cidr-mask-size=24",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--controllers=*,-bootstrapsigner,-tokencleaner",
        "--v=0"])
    sched = _cert_kubeconfig(d, "scheduler", node.url, ca, ca_key, "system:kube-scheduler")
    node._spawn("kube-scheduler", [
        str(assets / "kube-scheduler"), f"--kubeconfig={sched}", f"--authentication-kubeconfig={sched}",
        f"--authorization-kubeconfig={sched}", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        "--port=0", "--leader-elect=false", "--v=0"])

    t = time.monotonic()
    images.import_all(imgs, node.ctr)
    node.timings["import"] = time.monotonic() - t

    kubelet_kc = _cert_kubeconfig(d, "kubelet", node.url, ca, ca_key, f"system:node:{NODE_NAME}", ("system:nodes",))
    (d / "kubelet").mkdir()
    (d / "kubelet-plugins").mkdir()
    # Pods' resolver is their own loopback, where nothing answers: there is nothing to resolve
    # (with no name server at all, containerd would copy this machine's resolv.conf instead).
    (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (d / "kubelet.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": free_port(), "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
        "tlsCertFile": str(d / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(d / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(d / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "resolvConf": str(d / "resolv.conf"), "clusterDomain": "cluster.local",
        "volumePluginDir": str(d / "kubelet-plugins"),
        "serializeImagePulls": False, "syncFrequency": "10s", "fileCheckFrequency": "60s",
        "nodeStatusUpdateFrequency": "5s",
    }))
    node._spawn("kubelet", [
        str(assets / "kubelet"), f"--config={d / 'kubelet.yaml'}", f"--kubeconfig={kubelet_kc}",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{sock}",
        f"--node-ip={NODE_IP}", f"--hostname-override={NODE_NAME}", f"--root-dir={d / 'kubelet'}",
        f"--cert-dir={d / 'kubelet' / 'pki'}", "--v=1"])

    proxy_kc = _cert_kubeconfig(d, "kube-proxy", node.url, ca, ca_key, "system:kube-proxy")
    (d / "kube-proxy.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(proxy_kc)}, "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR, "hostnameOverride": NODE_NAME, "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
    }))
    node._spawn("kube-proxy", [str(assets / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}", "--v=0"])

    def ready():
        n = _api(node, f"/api/v1/nodes/{NODE_NAME}")
        conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
        return n if conds.get("Ready") == "True" and n["spec"].get("podCIDR") else None

    n = _wait(f"node {NODE_NAME}", node, ready, 120)
    if n["spec"]["podCIDR"] != POD_CIDR:
        raise RuntimeError(f"node got pod CIDR {n['spec']['podCIDR']}, CNI is set up for {POD_CIDR}")
    # The default ServiceAccount must exist before pods can be created in a namespace.
    _wait("service account controller", node,
          lambda: _api(node, "/api/v1/namespaces/default/serviceaccounts/default"), 60)
    _storage(node, pv_count)


def _guard_rules() -> None:
    """Drop anything to a Service or pod address that is not leaving onto the bridge (an
    untranslated ClusterIP, or a pod address before the bridge exists, would otherwise
    follow the default route), and forward nothing from the bridge anywhere but back onto
    it (pod -> Service -> pod). In mangle POSTROUTING, where the out device and the
    destination are final (after kube-proxy's DNAT)."""
    out, fwd = GUARD_CHAIN, GUARD_CHAIN + "-FWD"
    for table, chain in (("mangle", out), ("filter", fwd)):
        _sh("iptables", "-w", "-t", table, "-N", chain, check=False)
        _sh("iptables", "-w", "-t", table, "-F", chain)
    _sh("iptables", "-w", "-t", "mangle", "-A", out, "-d", SERVICE_CIDR, "-j", "DROP")
    _sh("iptables", "-w", "-t", "mangle", "-A", out, "-d", CLUSTER_CIDR, "!", "-o", BRIDGE, "-j", "DROP")
    _sh("iptables", "-w", "-A", fwd, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    for table, builtin, chain in (("mangle", "POSTROUTING", out), ("filter", "FORWARD", fwd)):
        if _sh("iptables", "-w", "-t", table, "-C", builtin, "-j", chain, check=False).returncode != 0:
            _sh("iptables", "-w", "-t", table, "-I", builtin, "-j", chain)


def _storage(node: Node, count: int) -> None:
    """A no-provisioner StorageClass and ``count`` local PersistentVolumes (folders under the
    scratch folder), as KIND's local-path gives: a claim binds when its first pod is scheduled."""
    _api(node, "/apis/storage.k8s.io/v1/storageclasses", "POST", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain"})
    add_volumes(node, [f"local-pv-{i:03d}" for i in range(count)])


def add_volumes(node: Node, names: list[str]) -> None:
    """More local PersistentVolumes of the node's StorageClass (a test that needs more than
    the node started with: two per workspace, one per restore)."""
    for name in names:
        path = node.pv_path(name)
        path.mkdir(parents=True)
        _api(node, "/api/v1/persistentvolumes", "POST", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                     "volumeMode": "Filesystem", "local": {"path": str(path)},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}}})


def ensure_volumes(node: Node, count: int, prefix: str) -> list[str]:
    """At least ``count`` unbound local PersistentVolumes, adding the shortfall as
    ``<prefix>-NNN``; the names added. Earlier tests' volumes stay Released (Retain: their
    files are evidence), so a test that needs many counts what is free, not what the node
    started with."""
    free = [pv for pv in _api(node, "/api/v1/persistentvolumes")["items"]
            if (pv.get("status") or {}).get("phase") == "Available" and not pv["spec"].get("claimRef")]
    names = [f"{prefix}-{i:03d}" for i in range(max(0, count - len(free)))]
    add_volumes(node, names)
    return names


def main(argv: list[str]) -> int:
    if argv[:1] != ["up"]:
        print("usage: python -m tasks.cluster.localnode.node up [--no-code-server]", file=sys.stderr)
        return 2
    node = start(code_server="--no-code-server" not in argv)
    env = node.workdir / "env"
    env.write_text(f"export VIBECODE_KUBECONFIG={node.kubeconfig}\nexport KUBECONFIG={node.kubeconfig}\n"
                   f"export VIBECODE_STORAGE_CLASS={STORAGE_CLASS}\n"
                   + "".join(f"# image {k}: {v}\n" for k, v in node.images.items()))
    print(json.dumps({"kubeconfig": str(node.kubeconfig), "env": str(env), "node_ip": NODE_IP,
                      "storage_class": STORAGE_CLASS, "images": node.images}), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        while not stop:
            node.check_alive()
            time.sleep(1)
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
