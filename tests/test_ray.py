"""--engine ray on real Ray: an embedded Ray shared by the session (tests/conftest.py ray_cluster), a head started
here with `ray start`, a real S3 server (moto) on 127.0.0.1, and real kills. Every run is compared with the local
engine on the same files: the same rows in the same order, the same errors, probabilities within 1e-6."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bench.mnist_png import write_mnist_pngs
from infer.contract import ArtifactError, read_manifest
from infer.csvout import format_row, partial_path
from infer.discover import Walk
from infer.options import InferOptions, OptionError
from infer.ray_engine import PAUSE_ENV, Shipped, open_ray, open_shipped
from infer.run import classify_paths
from tests.badfiles import write_cases
from tests.conftest import BIN, REPO, run_cli
from trainer.data import load_split

TIMEOUT = 300


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def assert_same_rows(got: list[list[str]], want: list[list[str]], prefix: tuple[str, str] = ("", "")) -> None:
    """Same header, rows, order, predictions and errors; probabilities within 1e-6. `prefix` (old, new) renames
    the expected paths (local folder → bucket URI)."""
    assert got[0] == want[0]
    assert [r[0] for r in got[1:]] == [prefix[1] + r[0][len(prefix[0]):] for r in want[1:]]
    for g, w in zip(got[1:], want[1:], strict=True):
        assert (g[1], g[-1]) == (w[1], w[-1]), (g, w)
        if w[-1]:
            assert g[2:-1] == w[2:-1] == [""] * 11
        else:
            np.testing.assert_allclose(np.array(g[2:-1], float), np.array(w[2:-1], float), atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the server that `process` starts accepts connections (it must not exit first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


def wait_for_file(path: Path, process: subprocess.Popen, lines: int = 1, timeout: float = TIMEOUT) -> str:
    """Until `path` holds `lines` complete lines, written by the run (which must still be going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text(encoding="utf-8", errors="replace")).count("\n") >= lines:
            return text
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{path} never got {lines} lines")


def without_ray_address() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


@pytest.fixture(scope="module")
def digit(data_dir):
    return load_split(data_dir, train=False).subset(1).images[0].numpy()


@pytest.fixture(scope="module")
def mixed(data_dir, digit, tmp_path_factory) -> Path:
    """About 2,000 real files: 1,980 MNIST test PNGs and every bad-input case of tests/badfiles.py."""
    root = tmp_path_factory.mktemp("mixed")
    write_mnist_pngs(data_dir, root / "mnist", 1980)
    write_cases(root / "bad", digit)
    return root


@pytest.fixture(scope="module")
def local_mixed(artifacts, mixed, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.csv"
    summary = classify_paths([str(mixed)], InferOptions(model_dir=artifacts, output=out, batch_size=64))
    return out, summary


@pytest.fixture(scope="module")
def local_mnist(artifacts, mnist_pngs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "mnist.csv"
    classify_paths([str(mnist_pngs)], InferOptions(model_dir=artifacts, output=out))
    return out


def test_an_actor_opens_only_bytes_that_match_the_manifest(artifacts):
    entry = read_manifest(artifacts).entry("onnx")
    data = (artifacts / entry.file).read_bytes()
    shipped = Shipped("onnx", entry.file, entry.sha256, [None], "cpu")
    opened, _folder = open_shipped(shipped, data, 1)
    assert opened.classify(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    with pytest.raises(ArtifactError, match="differ from the manifest's sha256"):
        open_shipped(shipped, data[:-1] + bytes([data[-1] ^ 1]), 1)


def test_the_local_engine_refuses_uris(artifacts, tmp_path):
    with pytest.raises(OptionError, match="--engine ray"):
        classify_paths(["s3://bucket/scans"], InferOptions(model_dir=artifacts, output=tmp_path / "x.csv"))


@pytest.mark.slow
def test_ray_writes_the_local_rows_for_2000_files_with_every_bad_case(ray_cluster, artifacts, mixed, local_mixed,
                                                                       tmp_path):
    local_csv, local_summary = local_mixed
    out = tmp_path / "ray.csv"
    summary = classify_paths([str(mixed)], InferOptions(model_dir=artifacts, output=out, batch_size=64,
                                                        engine="ray"))
    rows = read_csv(out)
    assert len(rows) - 1 > 2000 and sum(1 for r in rows[1:] if r[-1]) > 5  # the bad cases are error rows
    assert_same_rows(rows, read_csv(local_csv))
    assert (summary.classified, summary.failed, summary.skipped) == \
        (local_summary.classified, local_summary.failed, local_summary.skipped)
    assert not partial_path(out).exists()


@pytest.mark.slow
def test_preprocessing_actors_feeding_model_actors_give_the_same_rows(ray_cluster, artifacts, mixed, local_mixed):
    """The GPU layout (CPU actors preprocess, model actors classify), run here on CPUs."""
    manifest = read_manifest(artifacts)
    options = InferOptions(model_dir=artifacts, batch_size=64, engine="ray", device="cpu")
    engine = open_ray(manifest, options, [str(mixed)], actors=1, split=True)
    rows = [format_row(row, manifest.labels) for batch in engine.batches(Walk([str(mixed)])) for row in batch]
    assert_same_rows([read_csv(local_mixed[0])[0], *rows], read_csv(local_mixed[0]))


@pytest.mark.slow
def test_model_bytes_changed_on_the_way_fail_the_job_with_one_line(ray_cluster, artifacts, mnist_pngs):
    manifest = read_manifest(artifacts)
    options = InferOptions(model_dir=artifacts, engine="ray")
    engine = open_ray(manifest, options, [str(mnist_pngs)])
    engine.shipped = dataclasses.replace(engine.shipped, sha256="0" * 64)
    with pytest.raises(ArtifactError, match="differ from the manifest's sha256"):
        list(engine.batches(Walk([str(mnist_pngs)])))


def start_paused_run(artifacts, folder: Path, out: Path, address: str, marker: Path, index: int,
                     *extra: str) -> subprocess.Popen:
    """digits-infer --engine ray joined to `address`; the actor that gets the batch holding `index` writes its
    pid into `marker` and waits (infer.ray_engine.pause_here)."""
    env = {**os.environ, "RAY_ADDRESS": address, PAUSE_ENV: f"{marker}:{index}"}
    return subprocess.Popen([str(BIN / "digits-infer"), str(folder), "--engine", "ray", "--model-dir", str(artifacts),
                             "-o", str(out), "--batch-size", "50", *extra], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_every_file_is_written_once(ray_cluster, artifacts, mnist_pngs, local_mnist,
                                                                    tmp_path):
    out, marker = tmp_path / "out.csv", tmp_path / "paused"
    run = start_paused_run(artifacts, mnist_pngs, out, ray_cluster, marker, 300, "--quiet")
    actor = int(wait_for_file(marker, run))
    assert actor != run.pid
    os.kill(actor, signal.SIGKILL)
    _, stderr = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 0, stderr
    assert_same_rows(read_csv(out), read_csv(local_mnist))


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["kill -9", "ctrl-c"])
def test_a_stopped_driver_resumes_to_the_local_rows(ray_cluster, artifacts, mnist_pngs, local_mnist, tmp_path, stop):
    """The rows before the paused batch are written, then the driver is stopped: kill -9 leaves the partial file
    as it was, Ctrl-C exits 130 naming it; --resume keeps those rows and does the rest."""
    out, marker = tmp_path / "out.csv", tmp_path / "paused"
    run = start_paused_run(artifacts, mnist_pngs, out, ray_cluster, marker, 300)
    wait_for_file(marker, run)
    wait_for_file(partial_path(out), run, lines=301)  # header and the 300 rows before the paused batch
    if stop == "kill -9":
        run.kill()
        run.wait(timeout=TIMEOUT)
    else:
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists() and len(read_csv(partial_path(out))) == 301
    resumed = run_cli("digits-infer", mnist_pngs, "--engine", "ray", "--model-dir", artifacts, "-o", out, "--resume",
                      env={"RAY_ADDRESS": ray_cluster})
    assert resumed.returncode == 0, resumed.stderr
    assert "300 kept from before" in resumed.stderr
    assert_same_rows(read_csv(out), read_csv(local_mnist))


@pytest.mark.slow
def test_ray_address_joins_a_head_started_here(artifacts, mnist_pngs, local_mnist, tmp_path):
    """`ray start --head` on 127.0.0.1 (its own process group, stopped by this test): digits-infer joins it with
    --ray-address HOST:PORT. The head asks for Ray's
    token (RAY_AUTH_MODE=token; the token is this user's ~/.ray/auth_token), as clusters do by default."""
    port = free_port()
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats"],
                            env=without_ray_address(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(port, head)
        out = tmp_path / "address.csv"
        proc = run_cli("digits-infer", mnist_pngs, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
                       "--model-dir", artifacts, "-o", out, env={"RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"})
        assert proc.returncode == 0, proc.stderr
        assert "on ray: 2 actors" in proc.stderr
        assert_same_rows(read_csv(out), read_csv(local_mnist))
    finally:
        stop_group(head, port)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def stop_group(process: subprocess.Popen, port: int) -> None:
    """SIGTERM to the process group this test started (`ray start` and the Ray processes under it), SIGKILL to
    what is left after 30 s; and the address file `ray start` left for `ray.init(address="auto")`."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.exists() and current.read_text().strip().endswith(f":{port}"):
        current.unlink()


@pytest.mark.slow
def test_an_unreachable_address_is_one_line_and_exit_2(artifacts, mnist_pngs, tmp_path):
    port = free_port()  # nothing listens there
    proc = run_cli("digits-infer", mnist_pngs, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
                   "--model-dir", artifacts, "-o", tmp_path / "x.csv")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert not (tmp_path / "x.csv").exists() and not partial_path(tmp_path / "x.csv").exists()


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server on 127.0.0.1, started and stopped here; yields its endpoint URL."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def bucket_copy(data_dir, digit, root: Path) -> Path:
    """Files an object store can hold (no links, no folders named like images, printable UTF-8 names), with
    a file named like a folder plus a suffix (scans-2.png beside scans/), where key order and walk order differ."""
    write_mnist_pngs(data_dir, root / "scans", 150)
    cases = root.parent / "cases"
    write_cases(cases, digit)
    (root / "bad").mkdir()
    for path in cases.iterdir():
        if path.is_file() and not path.is_symlink() and path.name.isprintable() and os.access(path, os.R_OK):
            shutil.copyfile(path, root / "bad" / path.name)
    shutil.copyfile(root / "scans" / "00007.png", root / "scans-2.png")
    return root


@pytest.mark.slow
def test_s3_input_embedded_ray_gives_the_local_rows_and_never_imports_torch(s3_server, artifacts, data_dir, digit,
                                                                           tmp_path):
    """s3:// from moto's server, on an embedded Ray started by digits-infer itself (no RAY_ADDRESS). A torch
    package that records any import and refuses it is first on the path of the driver and of every actor."""
    import boto3

    local = bucket_copy(data_dir, digit, tmp_path / "local")
    env = {**without_ray_address(), "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="digits")
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "digits", f"batch/{path.relative_to(local)}")
    tripwire, imported = tmp_path / "tripwire", tmp_path / "torch-imported"
    (tripwire / "torch").mkdir(parents=True)
    (tripwire / "torch" / "__init__.py").write_text(
        f"import os\nopen({str(imported)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "raise ImportError('torch is not to be imported on the onnx path')\n")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tripwire), os.environ.get("PYTHONPATH")]))
    local_csv, ray_csv = tmp_path / "local.csv", tmp_path / "s3.csv"
    proc = run_cli("digits-infer", local, "--model-dir", artifacts, "-o", local_csv)
    assert proc.returncode == 1, proc.stderr
    skipped = proc.stderr.split("skipped ")[1].split(" ")[0]
    proc = subprocess.run([str(BIN / "digits-infer"), "s3://digits/batch/", "--engine", "ray", "--model-dir",
                           str(artifacts), "-o", str(ray_csv), "--batch-size", "32"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    assert f"skipped {skipped} non-image files" in proc.stderr and "Traceback" not in proc.stderr
    assert_same_rows(read_csv(ray_csv), read_csv(local_csv), (str(local), "s3://digits/batch"))
    assert not imported.exists(), imported.read_text()
