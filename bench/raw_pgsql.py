"""bench/raw_pgsql.py - the "raw PostgreSQL" line of scripts/bench
--pgsql: a throwaway PostgreSQL cluster under DATA/pgsql, bench/pg_insert.c
run against it with the rows the module stored, the cluster stopped and
removed again. Debian's postgresql package (scripts/bench installs it).

The cluster is PostgreSQL's defaults (synchronous_commit on: a batch is
on disk when acknowledged, as the module's are in SQLite's WAL) but for
shared_buffers, which is sized so that the indexes of 1,000,000 traces
fit (the default 128 MB would measure the operating system's page cache).
It listens on a Unix socket in its own directory only, so it cannot
collide with a server already running on the machine.
"""
import glob
import json
import os
import pwd
import re
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECTIONS = 2
SETTINGS = {"shared_buffers": "2GB"}


def bindir():
    """The newest /usr/lib/postgresql/N/bin, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda p: int(re.search(r"/(\d+)/bin/", p)
                                           .group(1)))
    return os.path.dirname(newest)


def build(data):
    exe = os.path.join(data, "pg_insert")
    include = subprocess.run(["pg_config", "--includedir"], check=True,
                             capture_output=True, text=True).stdout.strip()
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-I", include,
                    "-o", exe, os.path.join(HERE, "pg_insert.c"),
                    os.path.join(HERE, "trace_rows.c"),
                    "-lpq", "-lsqlite3", "-lpthread"], check=True)
    return exe


def as_postgres():
    """initdb and postgres refuse to run as root: run them as the
    postgres user the package creates."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run(data, db, max_seq):
    """Insert rows seq <= max_seq of db; pg_insert's JSON, plus the
    server's version and settings."""
    bins = bindir()
    if not bins:
        raise RuntimeError("no PostgreSQL server (/usr/lib/postgresql/*/bin)")
    exe = build(data)
    top = os.path.join(data, "pgsql")
    cluster = os.path.join(top, "data")
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(top)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(top, pw.pw_uid, pw.pw_gid)
    prefix = as_postgres()
    subprocess.run(prefix + [os.path.join(bins, "initdb"), "-D", cluster,
                             "-A", "trust", "-U", "postgres", "-E", "UTF8",
                             "--no-sync"],
                   check=True, capture_output=True)
    with open(os.path.join(cluster, "postgresql.conf"), "a") as f:
        f.write("listen_addresses = ''\n")
        f.write("unix_socket_directories = '%s'\n" % top)
        for k, v in SETTINGS.items():
            f.write("%s = %s\n" % (k, v))
    pg_ctl = prefix + [os.path.join(bins, "pg_ctl"), "-D", cluster]
    subprocess.run(pg_ctl + ["-l", os.path.join(top, "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        p = subprocess.run([exe, db, "host=%s user=postgres dbname=postgres"
                            % top, str(CONNECTIONS), str(max_seq)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("pg_insert: " + p.stderr)
        out = json.loads(p.stdout)
    finally:
        subprocess.run(pg_ctl + ["-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
    out["version"] = subprocess.run(
        [os.path.join(bins, "postgres"), "--version"], capture_output=True,
        text=True).stdout.strip()
    out["settings"] = ", ".join("%s %s" % kv for kv in SETTINGS.items())
    return out
