#!/usr/bin/python3
"""Installs the built packages on this machine, runs them, upgrades them in place and purges them.

  package_install_test.py --out DIR     DIR as build_packages.py left it (debs/, ssm/)

Runs as root (it installs packages); ctest holds the `dpkg` resource lock so no other packaging
test runs beside it. Steps, each checked:
  1. tripline-collector with dpkg -i; tripline-agent through the Distributor's install.sh (apt).
     Files, modes, owners, conffiles, the system user, the generated tokens, computed Depends,
     units enabled and clean under `systemd-analyze verify`.
  2. An operator edits agent.yaml (the watched paths) and collector.yaml (loopback, response off,
     a loopback EC2 endpoint); a test CA and server certificate go in /etc/tripline.
  3. The collector runs as its user with no capabilities; the SSM Command document's
     runShellScript step (as the SSM Agent would run it) sets agent_id and the collector address
     and writes the CA and the token; the agent runs with only CAP_DAC_READ_SEARCH, enrolls, and a
     file written under its watched directory arrives at the collector (triplinectl over TLS).
  4. Upgrade in place through the Distributor's update.sh with a newer agent package whose
     agent.yaml changed, and dpkg -i of a newer collector: the edited config, the key and the
     tokens are kept; the agent comes back with the same key and its events still arrive.
  5. The Distributor's uninstall.sh keeps config and key; purge removes the programs, configs,
     state, generated secrets and unit state, and leaves the operator's own files.
The machine is left as it was even when a step fails or the test is interrupted (packages purged,
the user removed if this test made it); after a SIGKILL, a marker in /run lets the next run purge
what this one left. Exit status 0 only when every check held.
"""

import argparse
import base64
import glob
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAKE_DISTRIBUTOR = os.path.join(ROOT, "packaging", "ssm", "make_distributor.py")
COMMAND_DOC = os.path.join(ROOT, "packaging", "ssm", "tripline-agent-install.yaml")
PACKAGES = ("tripline-agent", "tripline-collector")
USER = "tripline-collector"
MARKER = "/run/tripline-packaging-test.marker"
AGENT_ID = "i-0packagetest00001"
ETC = "/etc/tripline"


class Failure(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv, check=True, env=None, input=None):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, input=input, timeout=600)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def dpkg(*args):
    """dpkg, waiting while another process (an apt-get elsewhere on the machine) holds its lock."""
    deadline = time.monotonic() + 300
    while True:
        r = run(["dpkg", *args], check=False)
        if r.returncode == 0:
            return r
        if "lock" not in r.stderr or time.monotonic() > deadline:
            raise Failure(f"dpkg {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        time.sleep(1)


def status(pkg):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", pkg], check=False)
    return r.stdout.strip() if r.returncode == 0 else "not-installed"


def wait_for(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise Failure(f"timed out after {timeout:.0f}s waiting for {what}")


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def mode_owner(path):
    st = os.lstat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name)


def expect_mode(path, mode, owner, group):
    expect(os.path.exists(path), f"{path} does not exist")
    got = mode_owner(path)
    expect(got == (mode, owner, group),
           f"{path}: mode/owner {oct(got[0])} {got[1]}:{got[2]}, want {oct(mode)} {owner}:{group}")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def substitute(text, pattern, replacement, what):
    new, n = re.subn(pattern, replacement, text, count=1, flags=re.M | re.S)
    expect(n == 1, f"cannot edit {what}: no match for {pattern!r}")
    return new


class Proc:
    def __init__(self, name, argv, logdir, env=None):
        self.name = name
        self.log_path = os.path.join(logdir, name + ".log")
        self.log = open(self.log_path, "ab")
        # UMask=0077 as both units set it.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=lambda: os.umask(0o077))

    def alive(self):
        return self.proc.poll() is None

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class PackageTest:
    def __init__(self, out):
        self.out = out
        self.debs = {os.path.basename(p).split("_")[0]: p
                     for p in glob.glob(os.path.join(out, "debs", "*.deb"))}
        expect(sorted(self.debs) == list(PACKAGES), f"expected both packages in {out}/debs: {self.debs}")
        self.version = os.path.basename(self.debs["tripline-agent"]).split("_")[1]
        self.arch = os.path.basename(self.debs["tripline-agent"]).split("_")[2][:-len(".deb")]
        self.tmp = tempfile.mkdtemp(prefix="tripline-pkgtest-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.owned = False  # set once preflight found nothing of anyone else's to disturb
        self.collector = self.agent = None
        self.collector_addr = None

    # --- setup and teardown ----------------------------------------------------------------------

    def preflight(self):
        expect(os.geteuid() == 0, "this test installs packages: run it as root")
        expect(not os.path.isdir("/run/systemd/system"),
               "systemd runs this machine: the packages' maintainer scripts would start and stop "
               "real services; this test runs the programs by hand and needs a host without it")
        if os.path.exists(MARKER):
            self.clean_after_killed_run()
        installed = [p for p in PACKAGES if status(p) != "not-installed"]
        expect(not installed,
               f"{installed} already installed on this machine and not by this test: not touching them")
        expect(not self.user_exists(), f"user {USER} exists on this machine already and not by this test")
        self.owned = True
        self.save_marker()

    def save_marker(self):
        """What a run killed with SIGKILL leaves behind, for the next run to clean up."""
        with open(MARKER + ".tmp", "w") as f:
            json.dump({"tmp": self.tmp, "pids": [p.proc.pid for p in self.procs]}, f)
        os.replace(MARKER + ".tmp", MARKER)

    def clean_after_killed_run(self):
        with open(MARKER) as f:
            left = json.load(f)
        log(f"cleaning up after an interrupted run: {left}")
        for pid in left.get("pids", []):
            try:  # only our programs: the binary may be gone (purged), so match the name
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if re.search(r"/usr/sbin/tripline-(agent|collector)( \(deleted\))?$", exe):
                os.kill(pid, signal.SIGKILL)
                wait_for(f"pid {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}"), 10)
        installed = [p for p in PACKAGES if status(p) != "not-installed"]
        if installed:
            dpkg("--purge", *installed)
        self.remove_user()
        for name in ("collector.pem", "collector.key"):
            try:
                os.unlink(os.path.join(ETC, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(ETC)
        except OSError:
            pass
        if str(left.get("tmp", "")).startswith(tempfile.gettempdir() + "/tripline-pkgtest-"):
            shutil.rmtree(left["tmp"], ignore_errors=True)
        try:
            os.unlink(MARKER)
        except FileNotFoundError:
            pass

    def user_exists(self):
        try:
            pwd.getpwnam(USER)
            return True
        except KeyError:
            return False

    def remove_user(self):
        if self.user_exists():
            run(["userdel", USER], check=False)
        try:
            grp.getgrnam(USER)
            run(["groupdel", USER], check=False)
        except KeyError:
            pass

    def cleanup(self, failed):
        for p in reversed(self.procs):
            p.stop()
            if failed:
                print(f"--- {p.name} log ---\n{p.text()[-4000:]}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not self.owned:
            return
        installed = [p for p in PACKAGES if status(p) != "not-installed"]
        if installed:
            try:
                dpkg("--purge", *installed)
            except Failure as e:
                print(f"cleanup: {e}", file=sys.stderr)
        for name in ("collector.pem", "collector.key"):
            try:
                os.unlink(os.path.join(ETC, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(ETC)
        except OSError:
            pass
        self.remove_user()
        try:
            os.unlink(MARKER)
        except FileNotFoundError:
            pass

    def machine_clean(self):
        leftovers = [p for p in PACKAGES if status(p) != "not-installed"]
        if leftovers or os.path.exists(ETC) or self.user_exists() or os.path.exists(MARKER):
            print(f"FAIL: the machine is not clean: packages {leftovers}, {ETC} exists: "
                  f"{os.path.exists(ETC)}, user {USER}: {self.user_exists()}", file=sys.stderr)
            return False
        return True

    # --- steps -----------------------------------------------------------------------------------

    def install_agent(self):
        log("install: tripline-agent through the Distributor package's install.sh")
        self.run_distributor_script(os.path.join(self.out, "ssm"), "install.sh")
        expect(status("tripline-agent") == f"installed {self.version}", f"agent: {status('tripline-agent')}")
        depends = run(["dpkg-deb", "-f", self.debs["tripline-agent"], "Depends"]).stdout
        for lib in ("libgrpc++", "libprotobuf", "libsodium", "libc6", "libstdc++6"):
            expect(lib in depends, f"tripline-agent: Depends lacks {lib}: {depends}")
        conf = run(["dpkg-query", "-W", "-f=${Conffiles}", "tripline-agent"]).stdout
        expect(f"{ETC}/agent.yaml " in conf, f"agent.yaml is not a conffile: {conf}")
        for path in ("/usr/sbin/tripline-agent", "/usr/sbin/tripline-agent-enroll"):
            expect_mode(path, 0o755, "root", "root")
        for path in (f"{ETC}/agent.yaml", "/lib/systemd/system/tripline-agent.service"):
            expect_mode(path, 0o644, "root", "root")
        expect_mode("/var/lib/tripline", 0o700, "root", "root")
        expect(os.listdir("/var/lib/tripline") == [], "the package put something in /var/lib/tripline")
        expect(not os.path.exists(f"{ETC}/enrollment-token"), "the agent package made a token")
        self.expect_enabled("tripline-agent.service")

        # An operator's edit: watch a test directory instead of the host's /etc and /usr.
        self.watched = os.path.join(self.tmp, "watched")
        os.makedirs(self.watched)
        write(os.path.join(self.watched, "motd"), "hello\n")
        a = read(f"{ETC}/agent.yaml")
        a = substitute(a, r"^fim:\n.*?^(?=batch:)",
                       f"fim:\n  paths:\n    - path: {self.watched}\n      recursive: true\n\n",
                       "agent.yaml fim")
        write(f"{ETC}/agent.yaml", a)
        self.edited_agent_yaml = a

        # Enrolled on a host without a collector: the token file is new, root 0600.
        self.make_ca()
        self.token = os.urandom(32).hex()
        self.collector_addr = "collector.internal:7443"
        self.run_command_document()
        expect_mode(f"{ETC}/enrollment-token", 0o600, "root", "root")
        expect(read(f"{ETC}/enrollment-token") == self.token + "\n", "enrollment-token content")
        self.check_enrolled_config()
        log("install: agent files, modes, conffile, Depends, unit and the enroll step checked")

    def install_collector(self):
        log("install: tripline-collector with dpkg -i")
        dpkg("-i", self.debs["tripline-collector"])
        expect(status("tripline-collector") == f"installed {self.version}",
               f"collector: {status('tripline-collector')}")
        depends = run(["dpkg-deb", "-f", self.debs["tripline-collector"], "Depends"]).stdout
        for lib in ("adduser", "libgrpc++", "libsqlite3", "libcurl4", "libc6"):
            expect(lib in depends, f"tripline-collector: Depends lacks {lib}: {depends}")
        conf = run(["dpkg-query", "-W", "-f=${Conffiles}", "tripline-collector"]).stdout
        shipped = sorted(os.path.basename(p) for p in
                         glob.glob(os.path.join(ROOT, "packaging", "config", "rules", "*.yaml")))
        expect("file-integrity.yaml" in shipped, f"shipped rules: {shipped}")
        rules = [f"rules.d/{name}" for name in shipped]
        for f in ["collector.yaml"] + rules:
            expect(f"{ETC}/{f} " in conf, f"{f} is not a conffile: {conf}")
        for path in ("/usr/sbin/tripline-collector", "/usr/bin/triplinectl"):
            expect_mode(path, 0o755, "root", "root")
        for path in [f"{ETC}/collector.yaml", "/lib/systemd/system/tripline-collector.service"] + \
                [f"{ETC}/{f}" for f in rules]:
            expect_mode(path, 0o644, "root", "root")
        expect_mode("/var/lib/tripline-collector", 0o750, USER, USER)
        # The agent's token is kept (never overwritten) and made readable to the service's group.
        expect(read(f"{ETC}/enrollment-token") == self.token + "\n", "the collector replaced the token")
        for token in ("enrollment-token", "operator-token"):
            expect_mode(f"{ETC}/{token}", 0o640, "root", USER)
        expect(re.fullmatch(r"[0-9a-f]{64}\n", read(f"{ETC}/operator-token")),
               "operator-token: not a 256-bit hex token")
        pw = pwd.getpwnam(USER)
        expect(100 <= pw.pw_uid < 1000, f"{USER} uid {pw.pw_uid} is not a system uid")
        expect(pw.pw_shell in ("/usr/sbin/nologin", "/bin/false"), f"{USER} has a login shell {pw.pw_shell}")
        expect(pw.pw_dir == "/var/lib/tripline-collector", f"{USER} home {pw.pw_dir}")
        expect(grp.getgrgid(pw.pw_gid).gr_name == USER, f"{USER}'s primary group is not {USER}")
        self.expect_enabled("tripline-collector.service")
        # The installed units load cleanly: programs, users and man pages they name all exist.
        r = run(["systemd-analyze", "verify", "/lib/systemd/system/tripline-agent.service",
                 "/lib/systemd/system/tripline-collector.service"], check=False)
        expect(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
               f"systemd-analyze verify: exit {r.returncode}\n{r.stdout}{r.stderr}")
        log("install: collector files, modes, conffiles, user, tokens, Depends and units checked")

    def expect_enabled(self, unit):
        link = f"/etc/systemd/system/multi-user.target.wants/{unit}"
        expect(os.path.islink(link) and os.readlink(link) == f"/lib/systemd/system/{unit}",
               f"{unit} is not enabled ({link})")

    def make_ca(self):
        ca_key, self.ca = os.path.join(self.tmp, "ca.key"), os.path.join(self.tmp, "ca.pem")
        csr, key, cert = (os.path.join(self.tmp, n) for n in ("server.csr", "server.key", "server.pem"))
        ext = os.path.join(self.tmp, "ext.cnf")
        write(ext, "subjectAltName=IP:127.0.0.1\n")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=tripline test CA"])
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext])
        self.server_cert, self.server_key = cert, key

    def configure_collector(self):
        log("configure: the collector's certificate, operator edits")
        shutil.copy(self.server_cert, f"{ETC}/collector.pem")
        os.chmod(f"{ETC}/collector.pem", 0o644)
        shutil.copy(self.server_key, f"{ETC}/collector.key")
        os.chown(f"{ETC}/collector.key", 0, grp.getgrnam(USER).gr_gid)
        os.chmod(f"{ETC}/collector.key", 0o640)
        c = read(f"{ETC}/collector.yaml")
        c = substitute(c, r"^listen: .*?$", "listen: 127.0.0.1:0", "collector.yaml listen")
        c = substitute(c, r"^  # endpoint: .*?$", "  endpoint: http://127.0.0.1:9", "collector.yaml aws.endpoint")
        c = substitute(c, r"^  mode: auto$", "  mode: off", "collector.yaml response.mode")
        # This machine is not an EC2 instance: no identity document to check (the explicit opt-out).
        c = substitute(c, r"^  require_document: true[^\n]*$", "  require_document: false",
                       "collector.yaml identity.require_document")
        write(f"{ETC}/collector.yaml", c)

    def start_collector(self):
        ready_dir = os.path.join(self.tmp, "ready")
        os.makedirs(ready_dir, exist_ok=True)
        pw = pwd.getpwnam(USER)
        os.chown(ready_dir, pw.pw_uid, pw.pw_gid)
        ready = os.path.join(ready_dir, "collector.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        # As the unit runs it: its own user, no capabilities at all, no way to gain any.
        argv = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups",
                "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs",
                "/usr/sbin/tripline-collector", "--config", f"{ETC}/collector.yaml",
                "--ready-file", ready]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.collector = Proc("collector", argv, self.tmp, env)
        self.procs.append(self.collector)
        self.save_marker()

        def up():
            if not self.collector.alive():
                raise Failure(f"collector exited {self.collector.proc.returncode}:\n{self.collector.text()}")
            return os.path.exists(ready) and read(ready).strip()
        self.collector_addr = wait_for("the collector to listen", up, 30)
        expect_mode("/var/lib/tripline-collector/collector.db", 0o600, USER, USER)

    def run_command_document(self, interpolate=False):
        """The enrollAgent step as the SSM Agent runs it: parameters in SSM_<name> variables, or
        (interpolate=True, as SSM Agents before 3.3.2746.0 do) substituted into the script."""
        with open(COMMAND_DOC) as f:
            doc = yaml.safe_load(f)
        step = next(s for s in doc["mainSteps"] if s["action"] == "aws:runShellScript")
        values = {"collectorAddress": self.collector_addr, "collectorCa": read(self.ca),
                  "enrollmentToken": self.token, "enrollWaitSeconds": "90"}
        for name, value in values.items():
            expect(re.search(doc["parameters"][name]["allowedPattern"], value),
                   f"{name} {value!r} does not match its allowedPattern")
        text = "\n".join(step["inputs"]["runCommand"]) + "\n"
        env = dict(os.environ, AWS_SSM_INSTANCE_ID=AGENT_ID)
        if interpolate:
            for name, value in values.items():
                text = text.replace("{{" + name + "}}", value)
        else:
            env.update({f"SSM_{name}": value for name, value in values.items()})
        script = os.path.join(self.tmp, "enroll-step.sh")
        write(script, text, 0o700)
        r = run(["sh", script], env=env)
        os.unlink(script)
        log(f"command document: {r.stdout.strip().splitlines()[0]}")
        expect(self.token not in r.stdout + r.stderr, "the enrollment step printed the token")

    def start_agent(self, name):
        # As the unit runs it: root, but with CAP_DAC_READ_SEARCH as the only capability.
        argv = ["setpriv", "--bounding-set=-all,+dac_read_search", "--inh-caps=-all",
                "--no-new-privs", "/usr/sbin/tripline-agent", "--config", f"{ETC}/agent.yaml"]
        self.agent = Proc(name, argv, self.tmp)
        self.procs.append(self.agent)
        self.save_marker()

        def enrolled():
            if not self.agent.alive():
                raise Failure(f"agent exited {self.agent.proc.returncode}:\n{self.agent.text()}")
            return f"transport: enrolled agent_id={AGENT_ID}" in self.agent.text()
        wait_for("the agent to enroll", enrolled, 60)

    def ctl(self, *args):
        r = run(["/usr/bin/triplinectl", "--collector", self.collector_addr, "--ca-file", self.ca,
                 "--token-file", f"{ETC}/operator-token", "--json", *args])
        return json.loads(r.stdout)

    def wait_event(self, name):
        path = os.path.join(self.watched, name)
        write(path, f"{name}\n")

        def arrived():
            page = self.ctl("events", "--agent", AGENT_ID, "--limit", "1000")
            for e in page.get("events", []):
                f = e.get("event", {}).get("file")
                if f and base64.b64decode(f["path"]).decode("utf-8", "replace") == path:
                    return True
            return False
        wait_for(f"the event of {path} at the collector", arrived, 60)

    def check_enrolled_config(self):
        """agent.yaml is the operator's edit with exactly agent_id and the address set."""
        a = read(f"{ETC}/agent.yaml")
        want = substitute(self.edited_agent_yaml, r"^#? ?agent_id: .*?$", f"agent_id: {AGENT_ID}",
                          "expected agent.yaml agent_id")
        want = substitute(want, r"^  address: .*?$", f"  address: \"{self.collector_addr}\"",
                          "expected agent.yaml address")
        expect(a == want, f"agent.yaml after the enroll step is not the edit plus two lines:\n{a}")
        self.edited_agent_yaml = a
        expect_mode(f"{ETC}/collector-ca.pem", 0o644, "root", "root")
        expect(read(f"{ETC}/collector-ca.pem").strip() == read(self.ca).strip(), "collector-ca.pem is not the CA")

    def run_and_enroll(self):
        log("run: collector as its user, the Command document's enroll step again, the agent")
        self.start_collector()
        self.run_command_document()
        self.check_enrolled_config()
        # The token was already there: left as it was, still readable by the collector.
        expect_mode(f"{ETC}/enrollment-token", 0o640, "root", USER)

        self.start_agent("agent")
        expect_mode("/var/lib/tripline/agent.key", 0o600, "root", "root")
        agents = self.ctl("agents")["agents"]
        expect([a["agent_id"] for a in agents] == [AGENT_ID], f"agents: {agents}")
        self.public_key = agents[0]["public_key"]
        self.wait_event("before-upgrade.txt")
        log("run: enrolled over TLS, event delivered")

    def repack(self, deb, new_version, edit=None):
        """A newer build of `deb`: same files, version new_version, `edit(root)` applied."""
        root = os.path.join(self.tmp, "repack-" + os.path.basename(deb))
        run(["dpkg-deb", "-R", deb, root])
        control = os.path.join(root, "DEBIAN", "control")
        write(control, substitute(read(control), r"^Version: .*?$", f"Version: {new_version}", "control"))
        if edit:
            edit(root)
        lines = []
        for dirpath, _, files in os.walk(root):
            if os.path.relpath(dirpath, root).split(os.sep)[0] == "DEBIAN":
                continue
            for n in sorted(files):
                p = os.path.join(dirpath, n)
                if not os.path.islink(p):
                    with open(p, "rb") as f:
                        lines.append(f"{hashlib.md5(f.read()).hexdigest()}  {os.path.relpath(p, root)}\n")
        write(os.path.join(root, "DEBIAN", "md5sums"), "".join(sorted(lines, key=lambda l: l[34:])))
        outdir = os.path.join(self.tmp, "upgrade-debs")
        os.makedirs(outdir, exist_ok=True)
        name = os.path.basename(deb).split("_")[0]
        out = os.path.join(outdir, f"{name}_{new_version}_{self.arch}.deb")
        run(["dpkg-deb", "--root-owner-group", "-b", root, out])
        shutil.rmtree(root)
        return out

    def run_distributor_script(self, ssm_dir, script):
        with open(os.path.join(ssm_dir, "manifest.json")) as f:
            manifest = json.load(f)
        arch = {"amd64": "x86_64", "arm64": "arm64"}[self.arch]
        zip_name = manifest["packages"]["debian"]["12"][arch]["file"]
        expect(manifest["files"][zip_name]["checksums"]["sha256"] == sha256(os.path.join(ssm_dir, zip_name)),
               f"{zip_name}: checksum does not match the manifest")
        dest = os.path.join(self.tmp, "distributor-" + manifest["version"])
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(os.path.join(ssm_dir, zip_name)) as zf:
            zf.extractall(dest)
        for n in ("install.sh", "uninstall.sh", "update.sh"):
            os.chmod(os.path.join(dest, n), 0o755)
        r = run([os.path.join(dest, script)])
        log(f"distributor {script}: {r.stdout.strip().splitlines()[-1]}")

    def upgrade(self):
        new_version = f"{self.version}+pkgtest1"
        log(f"upgrade: {self.version} -> {new_version}")
        self.agent.stop()
        key_hash = sha256("/var/lib/tripline/agent.key")
        tokens = {t: sha256(f"{ETC}/{t}") for t in ("operator-token", "enrollment-token")}
        collector_yaml = read(f"{ETC}/collector.yaml")

        def change_agent_yaml(root):
            p = os.path.join(root, "etc", "tripline", "agent.yaml")
            write(p, read(p) + "# This release's default configuration.\n")
        agent_deb = self.repack(self.debs["tripline-agent"], new_version, change_agent_yaml)
        collector_deb = self.repack(self.debs["tripline-collector"], new_version)
        ssm_dir = os.path.join(self.tmp, "upgrade-ssm")
        agent_only = os.path.join(self.tmp, "upgrade-agent-deb")
        os.makedirs(agent_only)
        shutil.copy(agent_deb, agent_only)
        run(["/usr/bin/python3", MAKE_DISTRIBUTOR, "--deb-dir", agent_only, "--out", ssm_dir])
        self.run_distributor_script(ssm_dir, "update.sh")
        self.collector.stop()
        dpkg("-i", collector_deb)
        for p in PACKAGES:
            expect(status(p) == f"installed {new_version}", f"{p} after upgrade: {status(p)}")

        expect(read(f"{ETC}/agent.yaml") == self.edited_agent_yaml, "the upgrade replaced the edited agent.yaml")
        expect(read(f"{ETC}/agent.yaml.dpkg-dist").endswith("# This release's default configuration.\n"),
               "the new default agent.yaml was not put beside the edited one")
        expect(read(f"{ETC}/collector.yaml") == collector_yaml, "the upgrade replaced the edited collector.yaml")
        expect(sha256("/var/lib/tripline/agent.key") == key_hash, "the upgrade changed the agent's key")
        expect_mode("/var/lib/tripline", 0o700, "root", "root")
        expect_mode("/var/lib/tripline/agent.key", 0o600, "root", "root")
        for t, h in tokens.items():
            expect(sha256(f"{ETC}/{t}") == h, f"the upgrade replaced {t}")
        expect_mode("/var/lib/tripline-collector/collector.db", 0o600, USER, USER)

        self.start_collector()
        # The Command document runs again on every upgrade; here as an older SSM Agent runs it.
        self.run_command_document(interpolate=True)
        self.check_enrolled_config()
        expect(sha256("/var/lib/tripline/agent.key") == key_hash, "re-running enroll changed the key")
        self.start_agent("agent-upgraded")
        agents = self.ctl("agents")["agents"]
        expect([(a["agent_id"], a["public_key"]) for a in agents] == [(AGENT_ID, self.public_key)],
               f"after the upgrade the collector holds {agents}")
        expect("another key" not in self.agent.text(), "the upgraded agent was refused")
        self.wait_event("after-upgrade.txt")
        log("upgrade: edited configs, key and tokens kept; the same identity reports again")

    def remove_and_purge(self):
        log("remove: the Distributor's uninstall.sh")
        self.agent.stop()
        self.collector.stop()
        self.run_distributor_script(os.path.join(self.out, "ssm"), "uninstall.sh")
        expect(status("tripline-agent").startswith("config-files"), f"after remove: {status('tripline-agent')}")
        expect(not os.path.exists("/usr/sbin/tripline-agent"), "remove left the agent binary")
        expect(os.path.exists("/var/lib/tripline/agent.key"), "remove deleted the agent's key")
        expect(os.path.exists(f"{ETC}/agent.yaml"), "remove deleted agent.yaml")

        log("purge: both packages")
        dpkg("--purge", *PACKAGES)
        for p in PACKAGES:
            expect(status(p) == "not-installed", f"{p} after purge: {status(p)}")
        for path in ("/usr/sbin/tripline-agent", "/usr/sbin/tripline-agent-enroll",
                     "/usr/sbin/tripline-collector", "/usr/bin/triplinectl",
                     "/lib/systemd/system/tripline-agent.service",
                     "/lib/systemd/system/tripline-collector.service",
                     "/etc/systemd/system/multi-user.target.wants/tripline-agent.service",
                     "/etc/systemd/system/multi-user.target.wants/tripline-collector.service",
                     "/var/lib/systemd/deb-systemd-helper-enabled/tripline-agent.service.dsh-also",
                     "/var/lib/systemd/deb-systemd-helper-enabled/tripline-collector.service.dsh-also",
                     "/var/lib/tripline", "/var/lib/tripline-collector",
                     "/usr/share/doc/tripline-agent", "/usr/share/doc/tripline-collector"):
            expect(not os.path.lexists(path), f"purge left {path}")
        # What the operator put there stays; everything the packages made is gone.
        left = sorted(os.listdir(ETC)) if os.path.isdir(ETC) else []
        expect(left == ["collector.key", "collector.pem"], f"purge left in {ETC}: {left}")
        expect(self.user_exists(), f"purge removed the system user {USER} (Debian keeps it)")
        log("purge: programs, configs, state, secrets and unit state gone; operator files kept")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    def terminated(signum, frame):
        raise Failure(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, terminated)  # clean up on SIGTERM too (SIGINT raises already)
    t = PackageTest(args.out)
    failed = True
    try:
        t.preflight()
        t.install_agent()
        t.install_collector()
        t.configure_collector()
        t.run_and_enroll()
        t.upgrade()
        t.remove_and_purge()
        failed = False
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
    finally:
        t.cleanup(failed)
    if t.owned and not t.machine_clean():
        failed = True
    print("PASS" if not failed else "FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
