"""`make install` puts the module into apxs's module directory, under
DESTDIR when given, and nothing httpd cannot load beside it."""
import subprocess

from httpd import REPO, apxs_q


def test_make_install_honours_destdir(tmp_path):
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={tmp_path}"],
                       cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout
    moddir = tmp_path / apxs_q("LIBEXECDIR").lstrip("/")
    assert (moddir / "mod_tracellm.so").is_file()
    assert not (moddir / "mod_tracellm.la").exists()
