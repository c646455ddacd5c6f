"""`make install` puts the module into apxs's module directory, under
DESTDIR when given, and nothing httpd cannot load beside it."""
import subprocess

from httpd import REPO, apxs_q, httpd_binary, module_path


def test_make_install_honours_destdir(tmp_path):
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={tmp_path}"],
                       cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout
    moddir = tmp_path / apxs_q("LIBEXECDIR").lstrip("/")
    assert (moddir / "mod_tracellm.so").is_file()
    assert not (moddir / "mod_tracellm.la").exists()


def _syntax_check(server_root, body):
    conf = server_root / "httpd.conf"
    conf.write_text(
        f'ServerRoot "{server_root}"\nServerName 127.0.0.1\n'
        f'Listen 127.0.0.1:1\nPidFile "{server_root}/httpd.pid"\n'
        f'DefaultRuntimeDir "{server_root}"\nErrorLog "{server_root}/error_log"\n'
        '<IfModule !mpm_event_module>\n'
        f'  LoadModule mpm_event_module "{apxs_q("LIBEXECDIR")}/mod_mpm_event.so"\n'
        '</IfModule>\n'
        '<IfModule !authz_core_module>\n'
        f'  LoadModule authz_core_module "{apxs_q("LIBEXECDIR")}/mod_authz_core.so"\n'
        '</IfModule>\n'
        '<IfModule !authz_host_module>\n'
        f'  LoadModule authz_host_module "{apxs_q("LIBEXECDIR")}/mod_authz_host.so"\n'
        '</IfModule>\n' + body)
    p = subprocess.run([httpd_binary(), "-t", "-f", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    return p.returncode, p.stdout


def test_plain_httpd_snippet_is_valid(tmp_path):
    (tmp_path / "modules").mkdir()
    for so in ("mod_dbd.so", "mod_proxy.so", "mod_proxy_wstunnel.so"):
        (tmp_path / "modules" / so).symlink_to(
            f"{apxs_q('LIBEXECDIR')}/{so}")
    (tmp_path / "modules" / "mod_tracellm.so").symlink_to(module_path())
    rc, out = _syntax_check(
        tmp_path, f'Include "{REPO}/conf/httpd-snippet.conf"\n')
    assert rc == 0, out


def test_debian_a2enmod_pair_is_valid(tmp_path):
    moddir = apxs_q("LIBEXECDIR")
    load = (REPO / "conf" / "tracellm.load").read_text().replace(
        f"{moddir}/mod_tracellm.so", module_path())
    (tmp_path / "tracellm.load").write_text(load)
    rc, out = _syntax_check(
        tmp_path,
        f'LoadModule dbd_module "{moddir}/mod_dbd.so"\n'
        f'LoadModule proxy_module "{moddir}/mod_proxy.so"\n'
        f'LoadModule proxy_wstunnel_module "{moddir}/mod_proxy_wstunnel.so"\n'
        f'Include "{tmp_path}/tracellm.load"\n'
        f'Include "{REPO}/conf/tracellm.conf"\n')
    assert rc == 0, out
