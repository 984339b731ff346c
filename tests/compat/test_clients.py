#!/usr/bin/env python3
"""Compatibility: the everyday metadata and data flows of python-glanceclient (the `glance`
CLI), openstacksdk and `openstack image` against the real glint binary, asserting on what they return and on what
glint then serves, not only on exit codes.

Usage: tests/compat/test_clients.py GLINT_BINARY   (run with the venv's python; see
tests/run.sh, which creates the venv from tests/compat/requirements.txt)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402

FAILURES = []


def log(message):
    print(f"compat: {message}", flush=True)


def check(condition, message):
    log(("ok: " if condition else "FAIL: ") + message)
    if not condition:
        FAILURES.append(message)


# The S3 service of tests/s3/server.py, when the environment names one (tests/run.sh runs this
# suite once more with it): the default store `fast` is then a bucket, under S3_PREFIX.
S3 = {key: os.environ.get(f"TEST_S3_{key}")
      for key in ("ENDPOINT", "ACCESS_KEY", "SECRET_KEY", "BUCKET", "ROOT")}
S3_PREFIX = "compat/"


def s3_store():
    return S3["ENDPOINT"] is not None


def fast_store_keys():
    """The keys of [stores.fast] besides `default` and `description`: a directory, or with
    TEST_S3_ENDPOINT set, TEST_S3_BUCKET there (parts of 5 MiB, S3's smallest)."""
    if not s3_store():
        return 'datadirs = [{ path = "fast" }]\n'
    q = json.dumps  # a JSON string is a TOML basic string
    return (f'type = "s3"\nendpoint = {q(S3["ENDPOINT"])}\nregion = "us-east-1"\n'
            f'bucket = {q(S3["BUCKET"])}\nprefix = {q(S3_PREFIX)}\n'
            f'access_key_id = {q(S3["ACCESS_KEY"])}\nsecret_access_key = {q(S3["SECRET_KEY"])}\n'
            'path_style = true\npart_size = "5MiB"\n')


def fast_object_path(workdir, image_id):
    """Where the default store keeps an image's data on this machine: its directory, or the
    object's file under s3s-fs's root (None when the S3 service's root is not known)."""
    if not s3_store():
        return os.path.join(workdir, "state", "fast", image_id)
    if not S3["ROOT"]:
        return None
    return os.path.join(S3["ROOT"], S3["BUCKET"], S3_PREFIX + image_id)


def fast_object(workdir, image_id):
    """The bytes the default store holds for an image (None when they cannot be looked at)."""
    path = fast_object_path(workdir, image_id)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class Glint(ActivatedGlint):
    """glint with two stores and web-download allowed to loopback, on the database the
    environment's TEST_DATABASE_URL names (an empty PostgreSQL or MariaDB database; tests/run.sh
    runs this suite once per engine), else on SQLite in its state directory. The default store
    `fast` is a directory, or an S3 bucket when TEST_S3_ENDPOINT is set; `cheap` is always a
    directory."""

    def write_config(self):
        database = os.environ.get("TEST_DATABASE_URL")
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n[server]\nlisten = ["127.0.0.1:1"]\n'
                    '[log]\nlevel = "warn"\n'
                    + (f'[database]\nurl = "{database}"\n' if database else "")
                    + '[stores.fast]\ndefault = true\ndescription = "Fast"\n' + fast_store_keys()
                    + '[stores.cheap]\ndatadirs = [{ path = "cheap" }]\n'
                    '[import.web_download]\nallowed_hosts = ["127.0.0.1"]\nallowed_ports = []\n'
                    + ('[cache]\nenabled = true\n' if getattr(self, "cache", False) else ""))

    def rest(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()



def glance(g, *args):
    """The glance CLI with stdin closed (open stdin would be taken as image data)."""
    bindir = os.path.dirname(sys.executable)
    cmd = [os.path.join(bindir, "glance"), "--os-image-url", g.url, "--os-auth-token", "noauth", *args]
    result = subprocess.run(["sh", "-c", '"$@" <&-', "glance", *cmd], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def table(text):
    """The Property/Value rows of a glance table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and line.startswith("|") and cells[0] not in ("Property",):
            rows[cells[0]] = cells[1]
    return rows


def list_ids(text):
    ids = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells[0]) == 36 and cells[0].count("-") == 4:
            ids.append(cells[0])
    return ids


def glanceclient_flows(g):
    code, out, err = glance(g, "image-create", "--name", "cli-image", "--disk-format", "raw",
                            "--container-format", "bare", "--property", "os_distro=cirros")
    created = table(out)
    check(code == 0 and created.get("status") == "queued" and created.get("os_distro") == "cirros",
          f"glance image-create (no data): {created.get('status')} {err.strip()}")
    image_id = created.get("id", "")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(status == 200 and body["name"] == "cli-image" and body["visibility"] == "shared",
          "the created image is served with Glance's defaults")

    bulk = []
    for i in range(30):
        status, body = g.rest("POST", "/v2/images", {"name": f"bulk-{i:02d}"})
        bulk.append(body["id"])
    code, out, err = glance(g, "image-list")
    listed = list_ids(out)
    check(code == 0 and set(bulk + [image_id]) <= set(listed) and len(listed) == len(set(listed)),
          f"glance image-list pages past 25: {len(listed)} images, no duplicates")
    code, out, err = glance(g, "image-list", "--page-size", "7", "--property-filter", "os_distro=cirros")
    check(code == 0 and list_ids(out) == [image_id], f"image-list with a property filter: {list_ids(out)}")

    code, out, err = glance(g, "image-show", image_id)
    check(code == 0 and table(out).get("name") == "cli-image", "glance image-show")

    code, out, err = glance(g, "image-update", image_id, "--name", "renamed", "--property", "foo=bar",
                            "--min-ram", "512")
    shown = table(out)
    check(code == 0 and shown.get("name") == "renamed" and shown.get("foo") == "bar"
          and shown.get("min_ram") == "512", f"glance image-update --property: {err.strip()}")
    code, out, err = glance(g, "image-update", image_id, "--remove-property", "foo")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and "foo" not in body and body["os_distro"] == "cirros",
          f"glance image-update --remove-property: {err.strip()}")

    code, out, err = glance(g, "image-tag-update", image_id, "blue")
    code2, out, err2 = glance(g, "image-tag-update", image_id, "green")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and code2 == 0 and sorted(body["tags"]) == ["blue", "green"], "glance image-tag-update")
    code, out, err = glance(g, "image-update", image_id, "--name", "with-tags")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and sorted(body["tags"]) == ["blue", "green"] and body["name"] == "with-tags",
          f"image-update of a tagged image keeps its tags: {err.strip()}")
    code, out, err = glance(g, "image-tag-delete", image_id, "blue")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and body["tags"] == ["green"], "glance image-tag-delete")

    code, out, err = glance(g, "member-create", image_id, "project-b")
    check(code == 0 and "pending" in out, f"glance member-create: {err.strip()}")
    code, out, err = glance(g, "member-update", image_id, "project-b", "accepted")
    check(code == 0 and "accepted" in out, f"glance member-update: {err.strip()}")
    code, out, err = glance(g, "member-list", "--image-id", image_id)
    check(code == 0 and "project-b" in out and "accepted" in out, "glance member-list")

    code, out, err = glance(g, "image-deactivate", image_id)
    check(code != 0 and "403" in err and "queued" in err,
          f"image-deactivate of an image without data is refused as Glance does: {err.strip()}")

    code, out, err = glance(g, "image-delete", image_id)
    check(code == 0, f"glance image-delete: {err.strip()}")
    code, out, err = glance(g, "image-show", image_id)
    check(code != 0 and "404" in err, "a deleted image is gone")
    status, body = g.rest("POST", "/v2/images", {"id": image_id})
    check(status == 409, "a deleted image's id cannot be reused")


def data_flows(g, workdir):
    import hashlib

    data = os.urandom(13 * 1024 * 1024 + 7)  # with an S3 default store: a multipart upload
    source = os.path.join(workdir, "source.img")
    with open(source, "wb") as f:
        f.write(data)
    code, out, err = glance(g, "image-create", "--name", "with-data", "--disk-format", "raw",
                            "--container-format", "bare", "--file", source)
    created = table(out)
    image_id = created.get("id", "")
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and created.get("status") == "active" and created.get("checksum") == hashlib.md5(data).hexdigest()
          and body["os_hash_value"] == hashlib.sha512(data).hexdigest() and body["size"] == len(data),
          f"glance image-create --file: {created.get('status')} {err.strip()}")
    target = os.path.join(workdir, "downloaded.img")
    code, out, err = glance(g, "image-download", image_id, "--file", target)
    with open(target, "rb") as f:
        check(code == 0 and f.read() == data, f"glance image-download is byte-exact (the client checks the hash): {err.strip()}")
    stored = fast_object(workdir, image_id)
    check(stored is None or stored == data,
          f"the data is in the default store: {fast_object_path(workdir, image_id)}")

    code, out, err = glance(g, "image-deactivate", image_id)
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and body["status"] == "deactivated", f"glance image-deactivate: {err.strip()}")
    code, out, err = glance(g, "image-reactivate", image_id)
    status, body = g.rest("GET", f"/v2/images/{image_id}")
    check(code == 0 and body["status"] == "active", f"glance image-reactivate: {err.strip()}")

    code, out, err = glance(g, "image-create", "--name", "later", "--disk-format", "raw", "--container-format", "bare")
    later = table(out).get("id", "")
    code, out, err = glance(g, "image-upload", later, "--file", source)
    status, body = g.rest("GET", f"/v2/images/{later}")
    check(code == 0 and body["status"] == "active" and body["size"] == len(data), f"glance image-upload: {err.strip()}")


def format_flows(g, workdir):
    """Real images made by qemu-img: the clients read the virtual size qemu-img reports, and an
    unsafe qcow2 (a backing file) is refused with Glance's 415."""
    import openstack

    base = os.path.join(workdir, "base.qcow2")
    backed = os.path.join(workdir, "backed.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "5G"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, backed], check=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", base],
                                     capture_output=True, text=True, check=True).stdout)
    code, out, err = glance(g, "image-create", "--name", "qcow2", "--disk-format", "qcow2",
                            "--container-format", "bare", "--file", base)
    created = table(out)
    code2, out2, _ = glance(g, "image-show", created.get("id", ""))
    shown = table(out2)
    check(code == 0 and code2 == 0 and shown.get("virtual_size") == str(info["virtual-size"]),
          f"glance image-show virtual_size is qemu-img's {info['virtual-size']}: {shown.get('virtual_size')} {err.strip()}")
    conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": g.url}, image_api_version="2")
    image = conn.image.get_image(created.get("id", ""))
    check(image.virtual_size == info["virtual-size"],
          f"openstacksdk get_image().virtual_size is qemu-img's: {image.virtual_size}")

    code, out, err = glance(g, "image-create", "--name", "backed", "--disk-format", "qcow2",
                            "--container-format", "bare", "--file", backed)
    check(code != 0 and "415" in err, f"glance image-create of a qcow2 with a backing file is refused (415): {err.strip()}")
    refused = [i for i in conn.image.images() if i.name == "backed"]
    check(len(refused) == 1 and refused[0].status == "queued",
          f"the refused image stays queued without data: {[(i.status, i.size) for i in refused]}")


def openstack_cli(g, *args):
    bindir = os.path.dirname(sys.executable)
    cmd = [os.path.join(bindir, "openstack"), "--os-auth-type", "none", "--os-endpoint", g.url, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout, result.stderr


def osc_flows(g, workdir):
    import hashlib

    data = os.urandom(2 * 1024 * 1024 + 11)
    source = os.path.join(workdir, "osc-source.img")
    with open(source, "wb") as f:
        f.write(data)
    code, out, err = openstack_cli(g, "image", "create", "--file", source, "--disk-format", "raw",
                                   "--container-format", "bare", "osc-image", "-f", "json")
    created = json.loads(out) if code == 0 else {}
    check(created.get("status") == "active" and created.get("checksum") == hashlib.md5(data).hexdigest(),
          f"openstack image create --file: {err.strip()[-200:]}")
    target = os.path.join(workdir, "osc-saved.img")
    code, out, err = openstack_cli(g, "image", "save", "--file", target, "osc-image")
    with open(target, "rb") as f:
        check(code == 0 and f.read() == data, f"openstack image save is byte-exact: {err.strip()[-200:]}")


def sdk_flows(g):
    import openstack

    conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": g.url}, image_api_version="2")
    image = conn.image.create_image(name="sdk-image", disk_format="raw", container_format="bare",
                                    os_distro="ubuntu", visibility="private")
    check(image.status == "queued" and image.visibility == "private" and image.os_distro == "ubuntu",
          "openstacksdk create_image")
    fetched = conn.image.get_image(image.id)
    check(fetched.name == "sdk-image" and fetched.min_ram == 0, "openstacksdk get_image")
    names = [i.name for i in conn.image.images()]
    check("sdk-image" in names and len(names) >= 31, f"openstacksdk images() pages through {len(names)}")
    check([i.id for i in conn.image.images(name="sdk-image")] == [image.id], "openstacksdk images(name=…)")
    updated = conn.image.update_image(image, name="sdk-renamed", os_version="24.04")
    status, body = g.rest("GET", f"/v2/images/{image.id}")
    check(updated.name == "sdk-renamed" and body["name"] == "sdk-renamed" and body["os_version"] == "24.04"
          and body["os_distro"] == "ubuntu", "openstacksdk update_image")
    conn.image.add_tag(image, "sdk-tag")
    check(conn.image.get_image(image).tags == ["sdk-tag"], "openstacksdk add_tag")
    conn.image.remove_tag(image, "sdk-tag")
    check(conn.image.get_image(image).tags == [], "openstacksdk remove_tag")
    conn.image.delete_image(image)
    check(conn.image.find_image(image.id) is None, "openstacksdk delete_image")

    data = os.urandom(1024 * 1024 + 3)
    image = conn.image.create_image(name="sdk-data", data=data, disk_format="raw", container_format="bare")
    fetched = conn.image.get_image(image.id)
    check(fetched.status == "active" and fetched.size == len(data), f"openstacksdk create_image(data=…): {fetched.status}")
    check(conn.image.download_image(fetched).content == data, "openstacksdk download_image is byte-exact")


def wait_imported(g, image_id, stores=None):
    """Polls until the image's import task is done (no lock) and, if given, it is in `stores`."""
    deadline = time.monotonic() + 60
    body = {}
    while time.monotonic() < deadline:
        status, body = g.rest("GET", f"/v2/images/{image_id}")
        done = status == 200 and "os_glance_import_task" not in body and body.get("status") in ("active", "queued")
        if done and (stores is None or sorted(body.get("stores", "").split(",")) == sorted(stores)):
            return body
        time.sleep(0.05)
    return body


def serve_directory(directory):
    """A local web server for web-download, in a thread; returns its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def import_flows(g, workdir):
    import hashlib

    data = os.urandom(3 * 1024 * 1024 + 5)
    source = os.path.join(workdir, "import-source.img")
    with open(source, "wb") as f:
        f.write(data)
    md5, sha512 = hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()

    def holds_data(body):
        return (body.get("status") == "active" and body.get("checksum") == md5
                and body.get("os_hash_value") == sha512 and body.get("size") == len(data))

    code, out, err = glance(g, "stores-info")
    check(code == 0 and '"id": "fast"' in out and '"default": "true"' in out and '"id": "cheap"' in out,
          f"glance stores-info: {out.strip()} {err.strip()}")

    code, out, err = glance(g, "image-create-via-import", "--name", "via-direct", "--disk-format", "raw",
                            "--container-format", "bare", "--import-method", "glance-direct", "--file", source)
    direct = table(out).get("id", "")
    body = wait_imported(g, direct)
    check(code == 0 and holds_data(body) and body.get("stores") == "fast",
          f"glance image-create-via-import --import-method glance-direct --file: {body.get('status')} {err.strip()}")

    base = serve_directory(workdir)
    code, out, err = glance(g, "image-create-via-import", "--name", "via-web", "--disk-format", "raw",
                            "--container-format", "bare", "--import-method", "web-download",
                            "--uri", f"{base}/import-source.img")
    web = table(out).get("id", "")
    body = wait_imported(g, web)
    check(code == 0 and holds_data(body),
          f"glance image-create-via-import --import-method web-download --uri: {body.get('status')} {err.strip()}")

    # The legacy tasks API: glance task-create --type import, then task-show until it ends.
    legacy_input = {"import_from": f"{base}/import-source.img", "import_from_format": "raw",
                    "image_properties": {"name": "via-task", "container_format": "bare"}}
    code, out, err = glance(g, "task-create", "--type", "import", "--input", json.dumps(legacy_input))
    task_id = table(out).get("id", "")
    check(code == 0 and task_id and table(out).get("type") == "import", f"glance task-create: {out} {err.strip()}")
    deadline = time.monotonic() + 60
    shown = {}
    while time.monotonic() < deadline:
        code, out, err = glance(g, "task-show", task_id)
        shown = table(out)
        if shown.get("status") in ("success", "failure"):
            break
        time.sleep(0.1)
    result = json.loads(shown.get("result") or "null") or {}
    _, imported = g.rest("GET", f"/v2/images/{result.get('image_id')}")
    check(shown.get("status") == "success" and isinstance(imported, dict) and holds_data(imported)
          and imported.get("name") == "via-task", f"glance task-show: the legacy import succeeded: {shown} {imported}")

    code, out, err = glance(g, "image-import", direct, "--import-method", "copy-image", "--stores", "cheap")
    body = wait_imported(g, direct, stores=["fast", "cheap"])
    copied = os.path.join(workdir, "state", "cheap", direct)
    with open(copied, "rb") as f:
        check(code == 0 and holds_data(body) and body.get("stores") == "fast,cheap" and f.read() == data,
              f"glance image-import --import-method copy-image --stores cheap: {body.get('stores')} {err.strip()}")

    code, out, err = glance(g, "image-tasks", direct)
    check(code == 0 and out.count("success") == 2, f"glance image-tasks: {out.strip()} {err.strip()}")

    import openstack

    conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": g.url}, image_api_version="2")
    image = conn.image.create_image(name="sdk-import", data=data, disk_format="raw", container_format="bare",
                                    use_import=True)
    body = wait_imported(g, image.id)
    check(holds_data(body) and body.get("stores") == "fast", f"openstacksdk create_image(use_import=True): {body.get('status')} {body.get('stores')}")
    image = conn.image.create_image(name="sdk-import-stores", data=data, disk_format="raw",
                                    container_format="bare", use_import=True, stores=["cheap", "fast"])
    body = wait_imported(g, image.id, stores=["cheap", "fast"])
    check(holds_data(body), f"openstacksdk create_image(use_import=True, stores=[…]): {body.get('stores')}")
    check(sorted(s.id for s in conn.image.stores()) == ["cheap", "fast"], "openstacksdk stores()")

    code, out, err = openstack_cli(g, "image", "create", "--import", "--file", source, "--disk-format", "raw",
                                   "--container-format", "bare", "osc-import", "-f", "json")
    created = json.loads(out) if code == 0 else {}
    body = wait_imported(g, created.get("id", "missing"))
    check(holds_data(body), f"openstack image create --import: {err.strip()[-200:]}")


def cache_flows(g, workdir):
    """glanceclient's cache commands (Images API 2.14 and 2.18) once a reload turned the cache
    on, and their refusal once another turned it off."""
    g.cache = True
    g.reload()
    data = os.urandom(2 * 1024 * 1024 + 3)
    source = os.path.join(workdir, "cached.img")
    with open(source, "wb") as f:
        f.write(data)
    code, out, err = glance(g, "image-create", "--name", "cached", "--disk-format", "raw",
                            "--container-format", "bare", "--file", source)
    image_id = table(out).get("id", "")
    check(code == 0 and image_id, f"glance image-create for the cache: {err.strip()}")

    code, out, err = glance(g, "cache-queue", image_id)
    check(code == 0 and not err.strip(), f"glance cache-queue: {err.strip()}")
    deadline = time.monotonic() + 30
    listed = {}
    while time.monotonic() < deadline:
        _, listed = g.rest("GET", "/v2/cache")
        if any(e.get("image_id") == image_id for e in listed.get("cached_images", [])):
            break
        time.sleep(0.05)
    code, out, err = glance(g, "cache-list")
    check(code == 0 and image_id in out and not listed.get("queued_images"),
          f"glance cache-list shows the prefetched image: {out.strip()} {err.strip()}")
    target = os.path.join(workdir, "cached.out")
    code, out, err = glance(g, "image-download", image_id, "--file", target)
    with open(target, "rb") as f:
        check(code == 0 and f.read() == data, f"glance image-download from the cache is byte-exact: {err.strip()}")
    _, listed = g.rest("GET", "/v2/cache")
    hits = [e.get("hits") for e in listed.get("cached_images", []) if e.get("image_id") == image_id]
    check(hits == [1], f"the download was a hit: {listed}")

    code, out, err = glance(g, "cache-prune")
    check(code == 0 and "Pruned 0 file(s)" in out and not err.strip(), f"glance cache-prune: {out.strip()} {err.strip()}")
    code, out, err = glance(g, "cache-clean")
    check(code == 0 and not err.strip(), f"glance cache-clean: {err.strip()}")
    code, out, err = glance(g, "cache-delete", image_id)
    _, listed = g.rest("GET", "/v2/cache")
    check(code == 0 and not err.strip() and not listed.get("cached_images"),
          f"glance cache-delete: {listed} {err.strip()}")
    glance(g, "cache-queue", image_id)
    code, out, err = glance(g, "cache-clear", "--target", "queue")
    _, listed = g.rest("GET", "/v2/cache")
    check(code == 0 and not err.strip() and not listed.get("queued_images"), f"glance cache-clear --target queue: {err.strip()}")
    code, out, err = glance(g, "cache-clear")
    _, listed = g.rest("GET", "/v2/cache")
    check(code == 0 and not err.strip() and listed == {"cached_images": [], "queued_images": []},
          f"glance cache-clear: {listed} {err.strip()}")

    g.cache = False
    g.reload()
    code, out, err = glance(g, "cache-list")
    check(code != 0 and "caching" in (out + err).lower(),
          f"with the cache off glance cache-list is refused: {out.strip()} {err.strip()}")


def metadef_flows(g, workdir):
    """Every md-* command of glanceclient, and openstacksdk's metadef calls, against one
    namespace and what it holds."""
    def ok(*args):
        code, out, err = glance(g, *args)
        check(code == 0 and not err.strip(), f"glance {' '.join(args)}: {out.strip()} {err.strip()}")
        return out

    ns = "OS::Glint::Compat"
    out = ok("md-namespace-create", ns, "--display-name", "Compat", "--description", "compat suite",
             "--visibility", "public")
    check(table(out).get("namespace") == ns, f"md-namespace-create shows the namespace: {out}")
    ok("md-resource-type-associate", ns, "--name", "OS::Glance::Image", "--prefix", "compat_")
    out = ok("md-namespace-resource-type-list", ns)
    check("OS::Glance::Image" in out and "compat_" in out, f"md-namespace-resource-type-list: {out}")
    check("OS::Glance::Image" in ok("md-resource-type-list"), "md-resource-type-list")
    out = ok("md-property-create", "--name", "cores", "--title", "Cores", "--type", "integer",
             "--schema", json.dumps({"type": "integer", "minimum": 1, "description": "CPU cores"}), ns)
    check(table(out).get("name") == "cores", f"md-property-create: {out}")
    check("cores" in ok("md-property-list", ns), "md-property-list")
    check(table(ok("md-property-show", ns, "cores")).get("minimum") == "1", "md-property-show")
    ok("md-property-update", ns, "cores", "--name", "vcpus", "--title", "vCPUs", "--schema", json.dumps({"type": "integer"}))
    check(table(ok("md-property-show", ns, "vcpus")).get("title") == "vCPUs", "md-property-update renames")
    out = ok("md-object-create", ns, "--name", "Limits",
             "--schema", json.dumps({"description": "limits", "required": ["quota"],
                                     "properties": {"quota": {"type": "integer", "title": "Quota"}}}))
    check(table(out).get("name") == "Limits", f"md-object-create: {out}")
    check("Limits" in ok("md-object-list", ns), "md-object-list")
    check(table(ok("md-object-show", ns, "Limits")).get("description") == "limits", "md-object-show")
    check(table(ok("md-object-property-show", ns, "Limits", "quota")).get("title") == "Quota",
          "md-object-property-show")
    ok("md-object-update", ns, "Limits", "--name", "Quotas")
    check("Quotas" in ok("md-object-list", ns), "md-object-update renames")
    ok("md-tag-create", ns, "--name", "alpha")
    # glanceclient's --append sends a bool header value, which its own HTTP layer cannot
    # encode (the client fails before sending anything); appending is asked through REST.
    status, _ = g.rest("POST", f"/v2/metadefs/namespaces/{ns}/tags", {"tags": [{"name": "beta"}, {"name": "gamma"}]},
                       headers={"X-Openstack-Append": "true"})
    out = ok("md-tag-list", ns)
    check(status == 201 and all(t in out for t in ("alpha", "beta", "gamma")), f"appended tags keep alpha: {out}")
    ok("md-tag-create-multiple", "--names", "delta", ns)
    out = ok("md-tag-list", ns)
    check("delta" in out and "alpha" not in out, f"md-tag-create-multiple replaces: {out}")
    ok("md-tag-update", ns, "delta", "--name", "epsilon")
    check(table(ok("md-tag-show", ns, "epsilon")).get("name") == "epsilon", "md-tag-update, md-tag-show")
    out = ok("md-namespace-show", ns, "--resource-type", "OS::Glance::Image")
    check("compat_vcpus" in out and "Quotas" in out and "epsilon" in out, f"md-namespace-show: {out}")
    out = ok("md-namespace-list", "--resource-types", "OS::Glance::Image", "--visibility", "public")
    check(ns in out, f"md-namespace-list filters: {out}")
    ok("md-namespace-update", ns, "--description", "updated", "--visibility", "public")
    check(table(ok("md-namespace-show", ns)).get("description") == "updated", "md-namespace-update")
    ok("md-tag-delete", ns, "epsilon")
    ok("md-property-delete", ns, "vcpus")
    ok("md-object-delete", ns, "Quotas")
    ok("md-resource-type-deassociate", ns, "OS::Glance::Image")
    check("OS::Glance::Image" not in ok("md-namespace-resource-type-list", ns), "md-resource-type-deassociate")
    ok("md-tag-create", ns, "--name", "t")
    ok("md-namespace-tags-delete", ns)
    ok("md-namespace-properties-delete", ns)
    ok("md-namespace-objects-delete", ns)
    ok("md-namespace-delete", ns)
    code, out, err = glance(g, "md-namespace-show", ns)
    check(code != 0, f"md-namespace-delete: the namespace is gone: {out} {err}")

    definition = os.path.join(workdir, "imported.json")
    with open(definition, "w") as f:
        json.dump({"namespace": "OS::Glint::Imported", "visibility": "public",
                   "resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "imp:"}],
                   "properties": {"speed": {"title": "Speed", "type": "string", "enum": ["slow", "fast"]}},
                   "objects": [{"name": "Thing", "properties": {"size": {"title": "Size", "type": "integer"}}}],
                   "tags": [{"name": "imported"}]}, f)
    out = ok("md-namespace-import", "--file", definition)
    check(table(out).get("namespace") == "OS::Glint::Imported", f"md-namespace-import: {out}")

    import openstack

    conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": g.url}, image_api_version="2")
    names = [n.namespace for n in conn.image.metadef_namespaces()]
    check("OS::Glint::Imported" in names, f"openstacksdk metadef_namespaces: {names}")
    fetched = conn.image.get_metadef_namespace("OS::Glint::Imported")
    check(fetched.namespace == "OS::Glint::Imported" and fetched.visibility == "public",
          f"openstacksdk get_metadef_namespace: {fetched}")
    speeds = [p.name for p in conn.image.metadef_properties("OS::Glint::Imported")]
    check(speeds == ["speed"], f"openstacksdk metadef_properties of the imported namespace: {speeds}")
    created = conn.image.create_metadef_namespace(namespace="OS::Glint::SDK", visibility="private")
    check(created.namespace == "OS::Glint::SDK", "openstacksdk create_metadef_namespace")
    prop = conn.image.create_metadef_property("OS::Glint::SDK", name="p", title="P", type="string")
    check(prop.name == "p", "openstacksdk create_metadef_property")
    check([p.name for p in conn.image.metadef_properties("OS::Glint::SDK")] == ["p"], "openstacksdk metadef_properties")
    obj = conn.image.create_metadef_object("OS::Glint::SDK", name="o")
    check(obj.name == "o" and [o.name for o in conn.image.metadef_objects("OS::Glint::SDK")] == ["o"],
          "openstacksdk metadef objects")
    types = [r.name for r in conn.image.metadef_resource_types()]
    check("OS::Nova::Flavor" in types, f"openstacksdk metadef_resource_types: {types}")
    conn.image.delete_metadef_namespace("OS::Glint::SDK")
    check("OS::Glint::SDK" not in [n.namespace for n in conn.image.metadef_namespaces()],
          "openstacksdk delete_metadef_namespace")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if s3_store():
        log(f"the default store `fast` is bucket {S3['BUCKET']} at {S3['ENDPOINT']} (prefix {S3_PREFIX})")
    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(os.path.abspath(sys.argv[1]), workdir, listening_socket())
        try:
            glanceclient_flows(g)
            data_flows(g, workdir)
            format_flows(g, workdir)
            osc_flows(g, workdir)
            sdk_flows(g)
            import_flows(g, workdir)
            cache_flows(g, workdir)
            metadef_flows(g, workdir)
        except Exception as e:
            FAILURES.append(f"aborted: {e!r}")
            log(f"FAIL: aborted: {e!r}")
        finally:
            g.stop()
            if FAILURES:
                with open(g.log) as f:
                    log("glint log tail:\n" + "".join(f.readlines()[-20:]))
    if FAILURES:
        log(f"{len(FAILURES)} failure(s)")
        return 1
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
