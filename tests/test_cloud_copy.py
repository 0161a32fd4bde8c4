"""`copy` with gs://, az:// and s3:// as sources and destinations, against real emulators."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import pytest
from conftest import run_cli_subprocess
from servers import AZURITE_KEY, counting_store_reads

from dicom_transfer.sample import write_sample_set

SCHEMES = ["gs://", "az://", "s3://"]


def upload(local: Path, url: str) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe(f"{root}/{path.relative_to(local)}", path.read_bytes())


def remote_tree(url: str) -> dict[str, str]:
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {path[len(root) + 1:]: hashlib.sha256(fs.cat(path)).hexdigest()
            for path in fs.find(root) if "/.dicom-transfer/" not in path}


def expected_tree(sample) -> dict[str, str]:
    return {i.relative_uid_path: hashlib.sha256(Path(i.path).read_bytes()).hexdigest() for i in sample.valid}


def copy_through_proxy(stores, scheme: str, root: str, tmp_path, plan, *extra: str):
    """Run ``copy ROOT/in/** -> ROOT/out`` in a new process whose requests to the store of
    ``scheme`` go through a FaultProxy with ``plan``; return the run and the (stopped) proxy."""
    from servers import FaultProxy

    server = {"gs://": stores["FakeGcs"], "s3://": stores["MotoS3"], "az://": stores["Azurite"]}[scheme]
    proxy = FaultProxy(server.url, plan=plan).start()
    if scheme == "gs://":
        env = {"STORAGE_EMULATOR_HOST": proxy.url}
    elif scheme == "s3://":
        env = {"AWS_ENDPOINT_URL": proxy.url}
    else:
        env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string.replace(server.url, proxy.url)}
    try:
        result = run_cli_subprocess("copy", "--input", f"{root}/in/**", "--output", f"{root}/out",
                                    "--summary", str(tmp_path / "s.json"), "--errors", str(tmp_path / "e.log"),
                                    *extra, env=env)
    finally:
        proxy.stop()
    return result, proxy


@pytest.fixture
def sample(tmp_path):
    return write_sample_set(str(tmp_path / "sample"), studies=2, series_per_study=2, instances_per_series=2)


def place(where: str, sample_dir: Path, bucket, tmp_path) -> str:
    if where == "local":
        return str(sample_dir)
    url = f"{bucket(where)}/in"
    upload(sample_dir, url)
    return url


def destination(where: str, bucket, tmp_path) -> str:
    return str(tmp_path / "out") if where == "local" else f"{bucket(where)}/out"


def read_tree(url: str) -> dict[str, str]:
    if "://" not in url:
        root = Path(url)
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file() and ".dicom-transfer" not in p.parts}
    return remote_tree(url)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_copy_within_one_store_then_rerun_unchanged(stores, bucket, sample, tmp_path, copy_cli, scheme):
    source = place(scheme, tmp_path / "sample", bucket, tmp_path)
    out = f"{bucket(scheme)}/by-uid"
    run = copy_cli("--input", f"{source}/**.dcm", "--output", out, "--errors", str(tmp_path / "e1.log"),
                   "--summary", str(tmp_path / "s1.json"))
    summary = json.loads((tmp_path / "s1.json").read_text())
    assert summary["counter"]["success"] == len(sample.valid) == 8
    assert summary["counter"]["failure"] == len(sample.bad)
    assert remote_tree(out) == expected_tree(sample)
    errors = [json.loads(line) for line in (tmp_path / "e1.log").read_text().splitlines()]
    assert all(e["Identifier"].startswith(scheme) for e in errors)
    assert run.status == 1
    again = copy_cli("--input", f"{source}/**.dcm", "--output", out, "--errors", str(tmp_path / "e2.log"),
                     "--summary", str(tmp_path / "s2.json"))
    counter = json.loads((tmp_path / "s2.json").read_text())["counter"]
    assert (counter["success"], counter["unchanged"]) == (0, 8)
    assert again.status == 1  # the bad files are still bad


PAIRS = [("gs://", "az://"), ("az://", "s3://"), ("s3://", "gs://")] + \
        [("local", s) for s in SCHEMES] + [(s, "local") for s in SCHEMES]


@pytest.mark.parametrize(("source_store", "destination_store"), PAIRS)
def test_copy_across_stores(stores, bucket, sample, tmp_path, copy_cli, source_store, destination_store):
    source = place(source_store, tmp_path / "sample", bucket, tmp_path)
    out = destination(destination_store, bucket, tmp_path)
    run = copy_cli("--input", f"{source}/study1/**", "--input", f"{source}/*.dcm", "--output", out,
                   "--errors", str(tmp_path / "e.log"), "--summary", str(tmp_path / "s.json"))
    counter = json.loads((tmp_path / "s.json").read_text())["counter"]
    study1 = {i.relative_uid_path for i in sample.valid if "/study1/" in i.path}
    assert counter["success"] == len(study1) == 4 and counter["failure"] == len(sample.bad)
    assert read_tree(out) == {k: v for k, v in expected_tree(sample).items() if k in study1}
    assert run.status == 1


def test_google_wildcard_examples_on_gcs(stores, bucket, tmp_path, copy_cli):
    from conftest import write_instance

    local = tmp_path / "D"
    made = {}
    for name in ["Example.dcm", "Example1.dcm", "Example01.dcm", "Example22.dcm", "sub/Example2.dcm"]:
        _, data, uids = write_instance(local / name, name)
        made[name] = f"{uids[0]}/{uids[1]}/{uids[2]}.dcm"
    url = f"{bucket('gs://')}/D"
    upload(local, url)
    for pattern, names in [("Example*.dcm", ["Example.dcm", "Example1.dcm", "Example01.dcm", "Example22.dcm"]),
                           ("Example?.dcm", ["Example1.dcm"]),
                           ("**.dcm", list(made))]:
        out = f"{bucket('gs://')}/out"
        run = copy_cli("--input", f"{url}/{pattern}", "--output", out, "--errors", str(tmp_path / "e.log"),
                       "--summary", str(tmp_path / "s.json"))
        assert run.status == 0
        assert set(remote_tree(out)) == {made[n] for n in names}, pattern


def test_missing_bucket_and_unreachable_store_exit_2(stores, tmp_path):
    missing = run_cli_subprocess("copy", "--input", "gs://no-such-bucket-here/**.dcm", "--output", str(tmp_path))
    assert missing.returncode == 2
    assert "source bucket gs://no-such-bucket-here does not exist" in missing.stderr
    from servers import free_port

    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    result = run_cli_subprocess("copy", "--input", str(tmp_path), "--output", "s3://anything/out", env=env)
    assert result.returncode == 2 and "destination bucket s3://anything cannot be reached" in result.stderr


def test_forbidden_store_and_secrets_never_appear(stores, bucket, sample, tmp_path):
    """A wrong account key is refused with exit 2; no key or SAS appears anywhere."""
    container = bucket("az://")
    upload(tmp_path / "sample", f"{container}/in")
    wrong_key = "V3J vbmcta2V5LXRoYXQtbXVzdC1uZXZlci1iZS1wcmludGVk".replace(" ", "") + "=="
    bad = stores["Azurite"].connection_string.replace(AZURITE_KEY, wrong_key)
    refused = run_cli_subprocess("copy", "--input", f"{container}/in/**", "--output", str(tmp_path / "o"),
                                 env={"AZURE_STORAGE_CONNECTION_STRING": bad})
    assert refused.returncode == 2
    assert f"source bucket {container}: access denied" in refused.stderr, refused.stderr
    good = run_cli_subprocess("copy", "--input", f"{container}/in/**", "--output", f"{container}/out",
                              "--summary", str(tmp_path / "s.json"), "--errors", str(tmp_path / "e.log"),
                              env=stores["Azurite"].env)
    assert good.returncode == 1, good.stderr
    texts = [refused.stdout, refused.stderr, good.stdout, good.stderr,
             (tmp_path / "s.json").read_text(), (tmp_path / "e.log").read_text()]
    for secret in (AZURITE_KEY, wrong_key, AZURITE_KEY[:20], wrong_key[:20]):
        assert not any(secret in text for text in texts)


def test_same_store_copy_is_server_side(stores, bucket, tmp_path):
    """Copying a 4 MB instance within GCS reads only its header through the worker."""
    from dicom_transfer.elements import FileRef
    from dicom_transfer.io.destination import Destination
    from dicom_transfer.io.instances import validate_file
    from dicom_transfer.sample import instance_bytes, uid_for

    data = instance_bytes(uid_for("ss", 1), uid_for("ss", 2), uid_for("ss", 3), pixel_bytes=4 << 20)
    root = bucket("gs://")
    fs, path = fsspec.core.url_to_fs(f"{root}/big.dcm")
    fs.pipe(path, data)
    with counting_store_reads(f"{root}/big.dcm") as reads:
        instance = validate_file(FileRef(f"{root}/big.dcm", len(data)))
        kind, through_worker = Destination(f"{root}/out").place("a/b.dcm", instance.url, instance.size)
    assert kind == "success" and through_worker == 0
    assert 0 < sum(reads) <= 64 * 1024, reads
    assert fs.cat(f"{path.rsplit('/', 1)[0]}/out/a/b.dcm") == data


def test_sas_token_works_and_never_appears(stores, bucket, sample, tmp_path):
    import datetime

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    container = bucket("az://")
    upload(tmp_path / "sample", f"{container}/in")
    sas = generate_account_sas(
        "devstoreaccount1", AZURITE_KEY, resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True, create=True, add=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    signature = dict(part.split("=", 1) for part in sas.split("&"))["sig"]
    endpoint = f"http://127.0.0.1:{stores['Azurite'].port}/devstoreaccount1"
    with_sas = {"AZURE_STORAGE_CONNECTION_STRING": f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"}
    good = run_cli_subprocess("copy", "--input", f"{container}/in/**", "--output", f"{container}/out",
                              "--summary", str(tmp_path / "s.json"), "--errors", str(tmp_path / "e.log"),
                              env=with_sas)
    assert good.returncode == 1, good.stderr  # the sample's bad files
    assert json.loads((tmp_path / "s.json").read_text())["counter"]["success"] == len(sample.valid)
    forged = sas.replace(signature, "AAAA" + signature[4:])
    refused = run_cli_subprocess("copy", "--input", f"{container}/in/**", "--output", str(tmp_path / "o"),
                                 env={"AZURE_STORAGE_CONNECTION_STRING":
                                      f"BlobEndpoint={endpoint};SharedAccessSignature={forged}"})
    assert refused.returncode == 2, refused.stderr
    texts = [good.stdout, good.stderr, refused.stdout, refused.stderr,
             (tmp_path / "s.json").read_text(), (tmp_path / "e.log").read_text()]
    for secret in (signature, forged.split("sig=")[1].split("&")[0]):
        assert not any(secret in text for text in texts)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_copy_through_20_percent_faults_delivers_everything_once(stores, bucket, sample, tmp_path, scheme):
    """429 with Retry-After, 502, 503 and connection resets on a fifth of the requests: every valid
    instance arrives once and intact, and nothing spurious is reported."""
    from servers import every_nth_fault

    root = bucket(scheme)
    upload(tmp_path / "sample", f"{root}/in")
    # Azure Storage throttles with 503 ServerBusy, never 429, and its SDK retries accordingly
    plan = every_nth_fault(5, throttle_status=503 if scheme == "az://" else 429)
    result, proxy = copy_through_proxy(stores, scheme, root, tmp_path, plan)
    assert proxy.requests >= 10 and proxy.faults == proxy.requests // 5, (proxy.requests, result.stderr[-2000:])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counter"]["success"] == len(sample.valid), (tmp_path / "e.log").read_text()[-2000:]
    assert summary["counter"]["failure"] == len(sample.bad)  # only the bad files
    assert remote_tree(f"{root}/out") == expected_tree(sample)


def test_an_sdk_error_that_is_not_retried_is_a_record_not_a_crash(stores, bucket, sample, tmp_path):
    """Azure's SDK does not retry 429 (Azure Storage never sends it): each such answer must become a
    failure record for its instance, and the run goes on with the others."""
    from servers import every_nth_fault

    root = bucket("az://")
    upload(tmp_path / "sample", f"{root}/in")
    result, _ = copy_through_proxy(stores, "az://", root, tmp_path, every_nth_fault(4, throttle_status=429))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert result.returncode == 1 and summary["status"] == "completedWithErrors", result.stderr[-2000:]
    errors = [json.loads(line) for line in (tmp_path / "e.log").read_text().splitlines()]
    assert len(errors) == summary["counter"]["failure"] >= len(sample.bad)
    throttled = [e for e in errors if "Too Many Requests" in e["Error"]]
    assert throttled, errors
    delivered = remote_tree(f"{root}/out")
    expected = expected_tree(sample)
    # An object can arrive while the answer about it is a fault (its copy went through, the check
    # after it was refused): it is then reported as failed, and a re-run counts it unchanged.
    assert 0 < summary["counter"]["success"] <= len(delivered)
    assert all(expected[path] == digest for path, digest in delivered.items())  # nothing corrupt
    assert summary["counter"]["success"] + summary["counter"]["failure"] == len(sample.valid) + len(sample.bad)


def _gcs_requests(stores, tmp_path, *args, plan=None):
    """Run the CLI against fake-gcs-server through a recording proxy; return the run and the
    requests as (method, path without query) pairs, plus the raw paths."""
    from servers import FaultProxy

    seen: list[tuple[str, str]] = []

    def record(number, method, path, body):
        seen.append((method, path))
        return plan(number, method, path, body) if plan else None

    proxy = FaultProxy(stores["FakeGcs"].url, plan=record).start()
    try:
        result = run_cli_subprocess(*args, env={"STORAGE_EMULATOR_HOST": proxy.url})
    finally:
        proxy.stop()
    return result, seen


def _kinds(seen: list[tuple[str, str]]) -> dict[str, int]:
    """Count requests by kind: ranged object reads, rewrites, listings, object metadata."""
    kinds = {"read": 0, "rewrite": 0, "list": 0, "metadata": 0, "other": 0}
    for method, path in seen:
        route = path.split("?")[0]
        if "alt=media" in path or route.startswith("/download/"):
            kinds["read"] += 1
        elif "/rewriteTo/" in route:
            kinds["rewrite"] += 1
        elif method == "GET" and route.endswith("/o"):
            kinds["list"] += 1
        elif method == "GET" and "/o/" in route:
            kinds["metadata"] += 1
        else:
            kinds["other"] += 1
    return kinds


def test_gcs_copy_makes_two_requests_per_instance_and_a_rerun_writes_nothing(stores, bucket, sample, tmp_path):
    """Existence comes from one listing per output directory, and a copy is verified from the
    rewrite's own answer: a header read and a rewrite per instance, no metadata request per instance.
    Worker processes (as on a real runner) have not seen the input's listing: reading an object
    must not cost a metadata request either."""
    root = bucket("gs://")
    upload(tmp_path / "sample", f"{root}/in")
    args = ("copy", "--input", f"{root}/in/**", "--output", f"{root}/out", "--errors", str(tmp_path / "e.log"),
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    first, seen = _gcs_requests(stores, tmp_path, *args, "--summary", str(tmp_path / "s1.json"))
    assert first.returncode == 1, first.stderr[-2000:]  # the sample's bad files
    counter = json.loads((tmp_path / "s1.json").read_text())["counter"]
    assert counter["success"] == len(sample.valid) == 8
    kinds = _kinds(seen)
    series = {path.rsplit("/", 1)[0] for path in expected_tree(sample)}
    assert kinds["rewrite"] == 8, seen
    assert kinds["metadata"] == 0, seen
    non_empty = [p for p in (tmp_path / "sample").rglob("*") if p.is_file() and p.stat().st_size]
    assert kinds["read"] == len(non_empty)  # one ranged header read per file (none for an empty one)
    # the input's listing, one per output directory before writing and one after (the
    # reconciliation), and the search for an earlier run's manifest
    assert kinds["list"] <= 2 * len(series) + 3, seen
    assert remote_tree(f"{root}/out") == expected_tree(sample)

    again, seen = _gcs_requests(stores, tmp_path, *args, "--summary", str(tmp_path / "s2.json"))
    counter = json.loads((tmp_path / "s2.json").read_text())["counter"]
    assert (counter["success"], counter["unchanged"]) == (0, 8), again.stderr[-2000:]
    kinds = _kinds(seen)
    assert kinds["rewrite"] == 0 and kinds["metadata"] == 0, seen  # decided from listings (size + MD5)


def test_an_output_that_exists_with_other_bytes_is_kept_and_reported(stores, bucket, sample, tmp_path):
    root = bucket("gs://")
    upload(tmp_path / "sample", f"{root}/in")
    taken, *_ = sorted(expected_tree(sample))
    fs, out = fsspec.core.url_to_fs(f"{root}/out")
    fs.pipe(f"{out}/{taken}", b"somebody else's bytes")
    args = ("copy", "--input", f"{root}/in/**", "--output", f"{root}/out", "--errors", str(tmp_path / "e.log"))
    run_cli_subprocess(*args, "--summary", str(tmp_path / "s.json"))
    counter = json.loads((tmp_path / "s.json").read_text())["counter"]
    assert counter["success"] == len(sample.valid) - 1
    errors = [json.loads(line)["Error"] for line in (tmp_path / "e.log").read_text().splitlines()]
    assert sum("exists with different content" in e for e in errors) == 1, errors
    fs.invalidate_cache()
    assert fs.cat(f"{out}/{taken}") == b"somebody else's bytes"
    replaced = run_cli_subprocess(*args, "--summary", str(tmp_path / "s2.json"), "--overwrite")
    counter = json.loads((tmp_path / "s2.json").read_text())["counter"]
    assert (counter["success"], counter["unchanged"]) == (1, len(sample.valid) - 1), replaced.stderr[-2000:]
    assert remote_tree(f"{root}/out") == expected_tree(sample)


S3_PRECONDITION_FAILED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code>"
                          b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
                          b"<Condition>If-None-Match</Condition></Error>")


@pytest.mark.parametrize("scheme", ["gs://", "s3://"])
def test_a_refused_conditional_copy_is_decided_not_clobbered(stores, bucket, sample, tmp_path, scheme):
    """An object written by someone else between our listing and our copy: the store refuses the
    copy made on condition that the target is absent (412; injected here, as fake-gcs-server and
    moto ignore the condition), and the instance is decided by what is there: the same bytes are
    unchanged."""

    root = bucket(scheme)
    upload(tmp_path / "sample", f"{root}/in")
    raced = sorted(expected_tree(sample))[0]
    source = next(i for i in sample.valid if i.relative_uid_path == raced)
    fs, out = fsspec.core.url_to_fs(f"{root}/out")
    refused = []

    def refuse_first_copy_of_raced(number, method, path, body):
        copy = "/rewriteTo/" in path if scheme == "gs://" else method == "PUT" and "/out/" in path
        if copy and raced.rsplit("/", 1)[1] in path and not refused:
            refused.append(path)
            fs.pipe(f"{out}/{raced}", Path(source.path).read_bytes())  # the other writer
            if scheme == "gs://":
                return ("status", 412, {"Content-Type": "application/json"},
                        b'{"error": {"code": 412, "message": "Precondition Failed"}}')
            return ("status", 412, {"Content-Type": "application/xml"}, S3_PRECONDITION_FAILED)
        return None

    result, _ = copy_through_proxy(stores, scheme, root, tmp_path, refuse_first_copy_of_raced)
    assert refused, result.stderr[-2000:]
    if scheme == "gs://":
        assert "ifGenerationMatch=0" in refused[0]
    counter = json.loads((tmp_path / "s.json").read_text())["counter"]
    assert (counter["success"], counter["unchanged"]) == (7, 1), result.stderr[-2000:]
    assert remote_tree(f"{root}/out") == expected_tree(sample)


@pytest.mark.parametrize("scheme", ["gs://", "s3://"])
def test_listings_page_through_more_than_one_page(stores, bucket, scheme):
    """Both stores answer 1,000 names per page: 1,100 objects need two pages, for the input's
    wildcard expansion (one directory, and recursive) and for the destination's listing."""
    import concurrent.futures

    from dicom_transfer.io.destination import Destination
    from dicom_transfer.io.listing import list_pattern
    from dicom_transfer.wildcards import parse_pattern

    root = bucket(scheme)
    fs, base = fsspec.core.url_to_fs(root)
    names = [f"many/{n:05d}.dcm" for n in range(1100)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: fs.pipe(f"{base}/{name}", name.encode()), names))
    fs.invalidate_cache()
    for pattern in (f"{root}/many/*.dcm", f"{root}/**.dcm"):
        found = list(list_pattern(parse_pattern(pattern)))
        assert [ref.url for ref in found] == [f"{root}/{name}" for name in names], pattern
        assert all(ref.size == len(name) and ref.md5 == hashlib.md5(name.encode()).hexdigest()
                   for ref, name in zip(found, names, strict=True))
    listed = dict(Destination(f"{root}/many").listing(""))
    assert sorted(listed) == [name.split("/")[1] for name in names]
    assert all(entry.present and entry.size == len(f"many/{relative}") and
               entry.md5 == hashlib.md5(f"many/{relative}".encode()).hexdigest()
               for relative, entry in listed.items())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_store_reports_the_md5_that_verifies_and_compares(stores, bucket, scheme):
    """Verification and unchanged detection rest on the MD5 each store reports, in its metadata
    and in its listings, for uploads and for server-side copies (Azure's sits in a
    ContentSettings object, which was once missed: copies were then checked by size alone)."""
    from dicom_transfer.io.checksums import md5_hex
    from dicom_transfer.io.objectstore import copy_into

    root = bucket(scheme)
    fs, base = fsspec.core.url_to_fs(root)
    fs.pipe(f"{base}/d/x.dcm", b"hello")
    expected = hashlib.md5(b"hello").hexdigest()
    assert md5_hex(fs.info(f"{base}/d/x.dcm")) == expected
    assert [md5_hex(entry) for entry in fs.ls(f"{base}/d", detail=True)] == [expected]
    assert copy_into(fs, f"{base}/e/y.dcm", f"{root}/d/x.dcm", 5) == 0  # server-side
    fs.invalidate_cache()
    assert md5_hex(fs.info(f"{base}/e/y.dcm")) == expected
