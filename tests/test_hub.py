"""Publishing: which files leave the machine, and the real `huggingface_hub` upload against a loopback fake Hub.

`FakeHub` answers the HTTP calls `HfApi.create_repo` / `create_branch` / `upload_folder` make (repo creation, YAML
validation, preupload, LFS batch + PUT, NDJSON commit) and records them; no test touches the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_kwargs
from huggingface_hub import ModelCard, constants

from hf_localvit import DWNetConfig, DWNetForImageClassification, dwnet_image_processor
from hf_localvit.cards import build_model_card
from hf_localvit.hub import HubTokenError, PublishError, publish_folder, publishable_files

REPO_ID = "org/dwnet-tiny"
TOKEN = "hf_fake_token_for_tests"
PUBLISHED = [
    "README.md",
    "config.json",
    "configuration_dwnet.py",
    "fusion_dwnet.py",
    "model.safetensors",
    "modeling_dwnet.py",
    "ops_dwnet.py",
    "preprocessor_config.json",
]
DECOY_MARKER = b"DECOY-must-never-be-uploaded"
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


# --------------------------------------------------------------------------------------------------- fake Hub


class FakeHub:
    """A loopback HTTP server (127.0.0.1, free port) that plays the Hub for uploads and records every request.

    `lfs=True` answers preupload with `uploadMode: lfs` for `*.safetensors` (then the client asks the LFS batch
    endpoint and PUTs the bytes), otherwise everything is `regular` (inlined, base64, in the commit). The server
    stops when the `with` block ends, or by itself after `max_seconds`."""

    def __init__(self, lfs: bool = False, max_seconds: float = 120.0):
        self.lfs = lfs
        self.max_seconds = max_seconds
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.lfs_uploads: dict[str, bytes] = {}
        self.created: list[dict] = []
        self.branches: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 30  # a stuck client cannot hold a handler thread for ever

            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    for _ in range(1_000_000):  # bounded
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                with hub._lock:
                    hub.requests.append(
                        {
                            "method": self.command,
                            "path": path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                status, payload = hub.route(self.command, path, body)
                self._reply(status, payload)

            do_GET = do_POST = do_PUT = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(self.max_seconds, self._server.shutdown)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def route(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        repo = r"(?P<repo>[^/]+/[^/]+)"
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            self.created.append(payload)
            name = f"{payload.get('organization')}/{payload['name']}"
            return 200, {"url": f"{self.url}/{name}", "name": name, "id": "0" * 24}
        if method == "POST" and (match := re.fullmatch(rf"/api/models/{repo}/branch/(?P<rev>.+)", path)):
            self.branches.append(match["rev"])
            return 200, {}
        if method == "POST" and path == "/api/validate-yaml":
            try:  # validate like the Hub would: the metadata must parse as a model card
                ModelCard(json.loads(body)["content"])
            except Exception as error:  # noqa: BLE001
                return 400, {"errors": [{"message": str(error)}]}
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and re.fullmatch(rf"/api/models/{repo}/preupload/.+", path):
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if self.lfs and f["path"].endswith(".safetensors") else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
            }
        if method == "POST" and re.fullmatch(rf"/{repo}\.git/info/lfs/objects/batch", path):
            objects = json.loads(body)["objects"]
            return 200, {
                "transfer": "basic",
                "objects": [
                    {
                        "oid": o["oid"],
                        "size": o["size"],
                        "actions": {
                            "upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"},
                            "verify": {"href": f"{self.url}/lfs-verify"},
                        },
                    }
                    for o in objects
                ],
            }
        if method == "PUT" and (match := re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", path)):
            self.lfs_uploads[match["oid"]] = body
            return 200, {}
        if method == "POST" and path == "/lfs-verify":
            return 200, {}
        if method == "POST" and (match := re.fullmatch(rf"/api/models/{repo}/commit/(?P<rev>.+)", path)):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            self.commits.append({"repo": match["repo"], "revision": match["rev"], "lines": lines})
            oid = hashlib.sha1(body).hexdigest()
            return 200, {"commitUrl": f"{self.url}/{match['repo']}/commit/{oid}", "commitOid": oid}
        return 404, {"error": f"FakeHub: no route for {method} {path}"}

    # What was committed: path -> ("regular", bytes) or ("lfs", oid)
    def committed_files(self) -> dict[str, tuple[str, object]]:
        files = {}
        for commit in self.commits:
            for line in commit["lines"]:
                if line["key"] == "file":
                    files[line["value"]["path"]] = ("regular", base64.b64decode(line["value"]["content"]))
                elif line["key"] == "lfsFile":
                    files[line["value"]["path"]] = ("lfs", line["value"]["oid"])
        return files

    def all_bodies(self) -> list[bytes]:
        bodies = [r["body"] for r in self.requests]
        bodies += [content for kind, content in self.committed_files().values() if kind == "regular"]
        return bodies + list(self.lfs_uploads.values())


# --------------------------------------------------------------------------------------------------- folders


def save_publishable_folder(folder: Path, with_card: bool = True, decoys: bool = True) -> DWNetForImageClassification:
    """What a converter or finetune.py leaves behind: a saved tiny DWNet + processor (+ card), and things that must
    never be uploaded (pickles, optimizer state, a checkpoint folder, logs, stray code)."""
    labels = ["cat", "dog", "bird", "fish", "frog"]
    config = DWNetConfig(
        **tiny_config_kwargs("static"), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}
    )
    model = DWNetForImageClassification(config).eval()
    model.save_pretrained(folder)
    dwnet_image_processor(image_size=64).save_pretrained(folder)
    if with_card:
        build_model_card("dwnet-tiny", repo_id=REPO_ID).save(folder / "README.md")
    if decoys:
        torch.save({"state": {0: torch.zeros(2)}, "marker": DECOY_MARKER}, folder / "optimizer.pt")
        (folder / "training_args.bin").write_bytes(pickle.dumps({"marker": DECOY_MARKER}))
        torch.save({"weight": torch.zeros(2), "marker": DECOY_MARKER}, folder / "pytorch_model.bin")
        (folder / "scheduler.pt").write_bytes(pickle.dumps(DECOY_MARKER))
        (folder / "checkpoint-10").mkdir()
        model.save_pretrained(folder / "checkpoint-10")
        (folder / "checkpoint-10" / "optimizer.pt").write_bytes(pickle.dumps(DECOY_MARKER))
        (folder / "runs").mkdir()
        (folder / "runs" / "events.out.tfevents").write_bytes(DECOY_MARKER)
        (folder / "trainer_state.json").write_text(json.dumps({"marker": DECOY_MARKER.decode()}))
        (folder / "train_helper.py").write_text(f"# {DECOY_MARKER.decode()}\n")
    return model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("publish") / "dwnet-tiny"
    save_publishable_folder(folder)
    return folder


def copy_folder(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------------------------------- selection


def test_publishable_files_are_weights_configs_code_and_card(model_folder):
    selection = publishable_files(model_folder)
    assert selection.files == PUBLISHED
    assert selection.left_out == [
        "checkpoint-10/", "optimizer.pt", "pytorch_model.bin", "runs/", "scheduler.pt", "train_helper.py",
        "trainer_state.json", "training_args.bin",
    ]


def test_publish_refuses_folders_without_safetensors_or_with_fake_ones(tmp_path):
    folder = tmp_path / "m"
    save_publishable_folder(folder, decoys=False)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(PublishError, match="no .safetensors weights.*pytorch_model.bin"):
        publishable_files(folder)
    # A pickle renamed to .safetensors is caught by its header.
    (folder / "model.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(PublishError, match="not a safetensors file"):
        publishable_files(folder)
    with pytest.raises(PublishError, match="no config.json"):
        publishable_files(tmp_path)


def test_publish_requires_the_code_that_auto_map_needs(tmp_path):
    folder = tmp_path / "m"
    save_publishable_folder(folder, decoys=False)
    (folder / "ops_dwnet.py").unlink()
    with pytest.raises(PublishError, match="ops_dwnet.py"):
        publishable_files(folder)


# --------------------------------------------------------------------------------------------------- upload


def _assert_nothing_else_sent(hub: FakeHub, folder: Path) -> None:
    committed = hub.committed_files()
    assert sorted(committed) == PUBLISHED
    preuploaded = sorted(f["path"] for r in hub.requests if r["path"].endswith(("/preupload/main", "/preupload/v1"))
                         for f in json.loads(r["body"])["files"])
    assert preuploaded == PUBLISHED
    for name, (kind, content) in committed.items():
        data = (folder / name).read_bytes()
        if kind == "regular":
            assert content == data, name
        else:
            assert content == hashlib.sha256(data).hexdigest(), name
            assert hub.lfs_uploads[content] == data, name
    for body in hub.all_bodies():
        assert DECOY_MARKER not in body
        assert not body.startswith(PICKLE_MAGIC)
    request_text = b"".join(r["path"].encode() + r["body"] for r in hub.requests)
    for decoy in (b"optimizer.pt", b"training_args.bin", b"pytorch_model.bin", b"checkpoint-10", b"trainer_state"):
        assert decoy not in request_text
    api_calls = [r for r in hub.requests if r["path"].startswith("/api/")]
    assert api_calls and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in api_calls)


def test_cli_publish_uploads_through_huggingface_hub_with_lfs(model_folder, tmp_path):
    """`hf-localvit publish` in a fresh process, HF_ENDPOINT pointing at the fake Hub (huggingface_hub reads it at
    import), token from HF_TOKEN, without hf_xet so the safetensors go through the LFS batch + PUT protocol."""
    folder = copy_folder(model_folder, tmp_path / "dwnet-tiny")
    with FakeHub(lfs=True) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        result = subprocess.run(
            [sys.executable, "-m", "hf_localvit.cli", "publish", str(folder), "--repo-id", REPO_ID, "--private",
             "--commit-message", "Add DWNet-T"],
            env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(c["organization"], c["name"], c.get("visibility")) for c in hub.created] == [
        ("org", "dwnet-tiny", "private")
    ]
    header = {"key": "header", "value": {"summary": "Add DWNet-T", "description": ""}}
    assert [c["lines"][0] for c in hub.commits] == [header]
    assert [c["revision"] for c in hub.commits] == ["main"]
    kinds = {name: kind for name, (kind, _) in hub.committed_files().items()}
    assert kinds["model.safetensors"] == "lfs" and kinds["config.json"] == "regular"
    assert len(hub.lfs_uploads) == 1
    # The Hub-side YAML check saw our card.
    assert any(r["path"] == "/api/validate-yaml" for r in hub.requests)
    _assert_nothing_else_sent(hub, folder)
    assert result.stdout.strip().splitlines()[-1] == f"{hub.url}/{REPO_ID}"
    assert "Left out: checkpoint-10/, optimizer.pt" in result.stdout


def test_publish_folder_in_process_with_revision(model_folder, tmp_path, monkeypatch):
    """The default (hf_xet installed) upload pipeline, through `publish_folder(endpoint=...)`, to a branch."""
    folder = copy_folder(model_folder, tmp_path / "dwnet-tiny")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1 for everything else
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(lfs=False) as hub:
        url = publish_folder(folder, REPO_ID, revision="v1", commit_message="Branch upload", endpoint=hub.url)
    assert url == f"{hub.url}/{REPO_ID}/tree/v1"
    assert hub.branches == ["v1"]
    assert [c["revision"] for c in hub.commits] == ["v1"]
    _assert_nothing_else_sent(hub, folder)


def test_publish_writes_the_matching_released_card_when_there_is_none(tmp_path, monkeypatch):
    """A converted ImageNet classifier (preset architecture, 1000 classes) gets its released model's card."""
    folder = tmp_path / "converted"
    save_publishable_folder(folder, with_card=False, decoys=False)
    saved = json.loads((folder / "config.json").read_text())
    # Only the config matters here: make it read like the converted dwnet-tiny (the weights are not looked at).
    saved.update({"embed_dim": 96, "depths": [2, 2, 6, 2], "id2label": {str(i): f"c{i}" for i in range(1000)}})
    (folder / "config.json").write_text(json.dumps(saved))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub() as hub:
        publish_folder(folder, "someone/dwnet-tiny", endpoint=hub.url)
    card = hub.committed_files()["README.md"][1].decode()
    assert 'model="someone/dwnet-tiny"' in card
    assert ModelCard(card).data.eval_results[0].metric_value == 81.2


def test_publish_without_token_uploads_nothing(model_folder, tmp_path, monkeypatch):
    folder = copy_folder(model_folder, tmp_path / "dwnet-tiny")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with FakeHub() as hub:
        with pytest.raises(HubTokenError, match="hf auth login.*HF_TOKEN"):
            publish_folder(folder, REPO_ID, endpoint=hub.url)
    assert hub.requests == []


def test_sharded_safetensors_need_every_shard(tmp_path):
    folder = tmp_path / "m"
    save_publishable_folder(folder, with_card=False, decoys=False)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1]}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PublishError, match="model-00002-of-00002.safetensors"):
        publishable_files(folder)
    (folder / shards[1]).write_bytes((folder / shards[0]).read_bytes())
    assert {"model.safetensors.index.json", *shards} <= set(publishable_files(folder).files)


def test_publish_rejects_unknown_card_and_bad_repo_id(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(PublishError, match="No released model 'resnet'"):
        publish_folder(model_folder, REPO_ID, card="resnet", endpoint="http://127.0.0.1:9")
    with pytest.raises(PublishError, match="Invalid repo id"):
        publish_folder(model_folder, "org/bad name", endpoint="http://127.0.0.1:9")
