"""A private httpd serving mod_tracellm, for the integration tests.

Modelled on httpd's own test/pyhttpd: the config is rendered from
conf/httpd-private.conf.in into a data directory that holds everything
(config, pid file, logs, SQLite database); the server is started and
stopped with `httpd -k start|stop`; its error_log is checked afterwards.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "conf" / "httpd-private.conf.in"


def apxs_q(var):
    return subprocess.check_output(["apxs", "-q", var], text=True).strip()


def httpd_binary():
    return os.path.join(apxs_q("SBINDIR"), apxs_q("TARGET"))


def module_path():
    return os.environ.get("TLLM_MODULE") or str(REPO / ".libs" / "mod_tracellm.so")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def tmp_base():
    """Where data directories go: $TLLM_TEST_TMP, else /tmp (every part of
    the path must be traversable by the children's user)."""
    base = os.environ.get("TLLM_TEST_TMP") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    return base


def new_data_dir(tag="srv"):
    d = tempfile.mkdtemp(prefix=f"tllm-it-{tag}-", dir=tmp_base())
    os.chmod(d, 0o755)
    return d


def render_config(data_dir, port, extra_conf="", mount="/", location_conf=""):
    """Write DATA/httpd.conf (and DATA/conf.d/extra.conf) and return the
    path of httpd.conf."""
    data_dir = os.path.abspath(data_dir)
    os.makedirs(os.path.join(data_dir, "run"), exist_ok=True)
    os.makedirs(os.path.join(data_dir, "conf.d"), exist_ok=True)
    text = TEMPLATE.read_text()
    usergroup = "User nobody\nGroup nogroup" if is_root() else ""
    for k, v in (("@DATA@", data_dir), ("@PORT@", str(port)),
                 ("@MODDIR@", apxs_q("LIBEXECDIR")),
                 ("@MODULE@", module_path()), ("@USERGROUP@", usergroup)):
        text = text.replace(k, v)
    if mount != "/" or location_conf:
        lines = text.split("\n")
        idx = [i for i, l in enumerate(lines) if l.strip() == "<Location />"]
        assert len(idx) == 1, "template has no single <Location /> line"
        i = idx[0]
        lines[i] = f"<Location {mount}>"
        if location_conf:
            lines.insert(i + 1, "  " + location_conf.strip().replace("\n", "\n  "))
        text = "\n".join(lines)
    conf = os.path.join(data_dir, "httpd.conf")
    with open(conf, "w") as f:
        f.write(text)
    with open(os.path.join(data_dir, "conf.d", "extra.conf"), "w") as f:
        f.write(extra_conf + "\n")
    return conf


def chown_nobody(path):
    if not is_root():
        return
    subprocess.check_call(["chown", "-R", "nobody:nogroup", path])


def httpd_t(extra_conf="", location_conf=""):
    """`httpd -t` on a rendered config with extra directives (server level
    in conf.d/extra.conf, and/or inside the API's <Location>).
    Returns (returncode, combined output)."""
    d = new_data_dir("t")
    try:
        conf = render_config(d, free_port(), extra_conf, location_conf=location_conf)
        p = subprocess.run([httpd_binary(), "-t", "-f", conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        return p.returncode, p.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


LOG_LINE = re.compile(r"^\[[^\]]*\] \[(?P<module>[^:\]]*):(?P<level>\w+)\]")
BAD_LEVELS = ("emerg", "alert", "crit", "error")


class TllmServer:
    def __init__(self, data_dir, port=None, extra_conf="", mount="/",
                 location_conf=""):
        self.data_dir = os.path.abspath(data_dir)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.mount = mount
        self.location_conf = location_conf
        self.conf = render_config(self.data_dir, self.port, extra_conf,
                                  mount=mount, location_conf=location_conf)
        chown_nobody(self.data_dir)
        self.pid_file = os.path.join(self.data_dir, "httpd.pid")
        self.error_log = os.path.join(self.data_dir, "error_log")

    @property
    def origin(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self):
        """URL of the mount point, without a trailing slash."""
        return self.origin + self.mount.rstrip("/")

    def _ctl(self, action):
        return subprocess.run([httpd_binary(), "-f", self.conf, "-k", action],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)

    def error_log_text(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout=20):
        p = self._ctl("start")
        assert p.returncode == 0, (
            f"httpd -k start failed ({p.returncode}):\n{p.stdout}\n"
            f"error_log:\n{self.error_log_text()}")
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                r = requests.get(self.base + "/", timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        raise AssertionError(
            f"httpd did not answer GET / with 200 within {timeout}s "
            f"(last: {last})\nerror_log:\n{self.error_log_text()}")

    def stop(self, timeout=20):
        if not os.path.exists(self.pid_file):
            return
        self._ctl("stop")
        deadline = time.time() + timeout
        while os.path.exists(self.pid_file) and time.time() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(self.pid_file), "httpd did not stop"

    def check_error_log(self, allowed_patterns=()):
        """Lines at error level or above (and warnings about tracellm) that
        no allowed regex matches."""
        allowed = [re.compile(p) for p in allowed_patterns]
        bad = []
        for line in self.error_log_text().splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            level = m.group("level")
            if level in BAD_LEVELS or (
                    level == "warn" and "tracellm" in line.lower()):
                if not any(a.search(line) for a in allowed):
                    bad.append(line)
        return bad

    def cleanup(self):
        if not os.environ.get("TLLM_KEEP"):
            shutil.rmtree(self.data_dir, ignore_errors=True)
