#!/usr/bin/env python3
"""The README's client examples, run as a user types them: the first `sh` block under
"## Using it", in one bash shell, in order, against glint on 127.0.0.1:9292 (the address the
README names) with the clients from the compat venv on PATH and a real qcow2 `cirros.img`
in the working directory. Fails if any command fails or the images it made are not there.

Usage: tests/compat/test_readme.py GLINT_BINARY   (run with the venv's python)
"""

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
URL = "http://127.0.0.1:9292"


def readme_block(heading):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split(heading, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    if not match:
        sys.exit(f"README: no sh block under {heading!r}")
    return match.group(1)


def main():
    binary = os.path.abspath(sys.argv[1])
    script = readme_block("## Using it")
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "glint.toml")
        with open(config, "w") as f:
            f.write(f'state_dir = "{workdir}/state"\n[server]\nlisten = ["127.0.0.1:9292"]\n[log]\nlevel = "warn"\n')
        log = open(os.path.join(workdir, "glint.log"), "w")
        glint = subprocess.Popen([binary, "serve", "--config", config], stderr=log)
        try:
            deadline = time.monotonic() + 20
            while True:
                if glint.poll() is not None:
                    sys.exit(f"glint exited ({glint.returncode}): is 127.0.0.1:9292 taken?")
                try:
                    with urllib.request.urlopen(URL + "/versions", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("glint did not answer on 127.0.0.1:9292")
                    time.sleep(0.02)
            image = os.path.join(workdir, "cirros.img")
            if shutil.which("qemu-img"):
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"], check=True)
            else:
                with open(image, "wb") as f:
                    f.write(b"QFI\xfb" + bytes(4092))
            env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
            for key in [k for k in env if k.startswith("OS_")]:
                del env[key]
            # stdin is a terminal, as for a user typing: glanceclient takes any other stdin
            # for image data.
            terminal, user_side = pty.openpty()
            try:
                ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                                     stdin=user_side, capture_output=True, text=True, timeout=300)
            finally:
                os.close(user_side)
                os.close(terminal)
            print(ran.stdout)
            if ran.returncode != 0:
                print(ran.stderr, file=sys.stderr)
                sys.exit(f"readme: the 'Using it' commands failed ({ran.returncode})")
            with urllib.request.urlopen(URL + "/v2/images", timeout=10) as r:
                images = json.load(r)["images"]
            named = [i for i in images if i["name"] == "cirros"]
            if len(named) != 2:
                sys.exit(f"readme: expected the two cirros images, found {[(i['name'], i['status']) for i in images]}")
            # The last table is `openstack image list`'s (its header starts "| ID").
            listing = ran.stdout[ran.stdout.rfind("| ID"):]
            if ran.stdout.rfind("| ID") < 0 or listing.count("cirros") != 2:
                sys.exit("readme: `openstack image list` did not list the two images")
            print("readme: the 'Using it' commands run as written")
        finally:
            glint.send_signal(signal.SIGTERM)
            glint.wait(timeout=30)


if __name__ == "__main__":
    main()
