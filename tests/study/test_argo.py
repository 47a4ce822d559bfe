"""`oneml study export-argo`: the manifest validates against Argo's Workflow schema (vendored subset, see the
$comment in data/argo-workflow.schema.json), runs every expanded run once with its own resolved config, and
carries S3 credentials only as Secret references."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from clikit import run_cli
from oneml.config import resolve
from oneml.study import expand, load_study

SCHEMA = json.loads((Path(__file__).parent / "data" / "argo-workflow.schema.json").read_text())
ROOT = Path(__file__).resolve().parents[2]
URI = "http://mlflow.mlops:5000"


def _validate(manifest) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(manifest)


def _study(tmp_path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "studies" / "tiny.yaml").read_text())
    data.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _export(capsys, tmp_path, *extra: str, study: Path | None = None):
    out = tmp_path / "workflow.yaml"
    args = ["study", "export-argo", str(study or _study(tmp_path)), "-o", str(out), "--image", "registry/oneml:1"]
    code, stdout, err = run_cli(capsys, *args, "--tracking-uri", URI, *extra)
    return code, out, stdout, err


def test_one_pod_per_run_with_its_resolved_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-in-the-manifest-123")
    code, out, stdout, err = _export(
        capsys, tmp_path, "--artifact-location", "s3://bucket/oneml", "--s3-endpoint", "http://minio:9000",
        "--s3-secret", "oneml-s3", "--gpus", "1", "--cpu", "2", "--memory", "8Gi", "--parallelism", "3",
        "--namespace", "ml",
    )  # fmt: skip
    assert code == 0, err
    text = out.read_text()
    manifest = yaml.safe_load(text)
    _validate(manifest)
    spec = manifest["spec"]
    assert spec["parallelism"] == 3 and manifest["metadata"]["namespace"] == "ml"
    dag, *pods = spec["templates"]
    trials = expand(load_study(_study(tmp_path)))
    assert sorted(t["name"] for t in dag["dag"]["tasks"]) == sorted(f"run-{t.run_id}" for t in trials)
    assert len(pods) == len(trials) == 8
    for pod in pods:
        (artifact,) = pod["inputs"]["artifacts"]
        config = yaml.safe_load(artifact["raw"]["data"])
        assert pod["name"] == f"run-{resolve(config).run_id}"  # the pod trains exactly that run
        assert config["tracking"]["uri"] == URI and config["tracking"]["artifact_location"] == "s3://bucket/oneml"
        container = pod["container"]
        metrics = ["--metrics-port", "8000", "--metrics-host", "0.0.0.0"]  # scraped from outside the pod
        assert container["command"] == ["oneml", "train", artifact["path"], "--quiet", *metrics]
        annotations = pod["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8000",
            "prometheus.io/path": "/metrics",
        }
        assert container["resources"] == {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
        }
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == URI
        assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "oneml-s3", "key": key}}}
    assert "not-in-the-manifest-123" not in text
    assert "argo submit" in stdout


def test_metrics_can_be_moved_to_another_port_or_left_out(tmp_path, capsys):
    code, out, _, err = _export(capsys, tmp_path, "--metrics-port", "9400")
    assert code == 0, err
    manifest = yaml.safe_load(out.read_text())
    _validate(manifest)
    pod = manifest["spec"]["templates"][1]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9400"
    assert pod["container"]["command"][-4:] == ["--metrics-port", "9400", "--metrics-host", "0.0.0.0"]
    code, out, _, err = _export(capsys, tmp_path, "--metrics-port", "0")
    assert code == 0, err
    pod = yaml.safe_load(out.read_text())["spec"]["templates"][1]
    assert "annotations" not in pod["metadata"] and "--metrics-port" not in pod["container"]["command"]
    broken = yaml.safe_load(out.read_text())
    broken["spec"]["templates"][1]["metadata"]["annotations"] = {"prometheus.io/port": 8000}
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        _validate(broken)  # annotations are checked by the schema too


def test_the_schema_check_is_live(tmp_path, capsys):
    """The vendored schema rejects what Argo would: a container without an image, a non-string quantity."""
    code, out, _, err = _export(capsys, tmp_path)
    assert code == 0, err
    manifest = yaml.safe_load(out.read_text())
    _validate(manifest)
    broken = json.loads(json.dumps(manifest))
    del broken["spec"]["templates"][1]["container"]["image"]
    with pytest.raises(jsonschema.ValidationError, match="'image' is a required property"):
        _validate(broken)
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["templates"][1]["container"]["resources"]["requests"]["cpu"] = 2
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        _validate(broken)
    broken = json.loads(json.dumps(manifest))
    broken["kind"] = "Pod"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


@pytest.mark.parametrize(
    ("extra", "changes", "message"),
    [
        (["--tracking-uri", "sqlite:///x.db"], {}, "--tracking-uri: pods need an MLflow server"),
        ([], {"halving": {"min_steps": 2, "eta": 2}}, "halving: successive halving decides between rungs"),
        ([], {"base": {"method": {"name": "nope"}}}, "method.name"),
        ([], {"tune": {"grid": {"train.warmup_ratio": [0.0, 0.1]}}}, "tune: tuning chooses each configuration"),
        ([], {"seeds": {"initial": 2, "max": 4, "until": "decided"}, "margin": "1%"}, "seeds: sequential rounds"),
    ],
)
def test_refusals_write_nothing(tmp_path, capsys, extra, changes, message):
    study = _study(tmp_path, **changes)
    code, out, _, err = _export(capsys, tmp_path, *extra, study=study)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_default_image_and_where_the_pods_record(tmp_path, capsys, monkeypatch):
    """Without --image the pods run oneml:<version>, the tag `make image` gives the Dockerfile's image. Without
    --tracking-uri the pods record to the study's tracking.uri, else $MLFLOW_TRACKING_URI; without either the
    export is refused."""
    import oneml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "workflow.yaml"
    study = _study(tmp_path)

    def export(path: Path) -> tuple[int, dict | None, str]:
        code, _, err = run_cli(capsys, "study", "export-argo", str(path), "-o", str(out))
        manifest = yaml.safe_load(out.read_text()) if code == 0 else None
        out.unlink(missing_ok=True)
        return code, manifest, err

    code, manifest, err = export(study)
    assert code == 2 and err.startswith("error: --tracking-uri: pods need an MLflow server") and not out.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-the-env:5000")
    code, manifest, err = export(study)
    assert code == 0, err
    pod = manifest["spec"]["templates"][1]["container"]
    assert pod["image"] == f"oneml:{oneml.__version__}"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://from-the-env:5000"} in pod["env"]
    base = yaml.safe_load(study.read_text())["base"] | {"tracking": {"uri": "http://from-the-yaml:5000"}}
    code, manifest, err = export(_study(tmp_path, base=base))
    assert code == 0, err
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://from-the-yaml:5000"} in pod_env(manifest)


def pod_env(manifest: dict) -> list[dict]:
    return manifest["spec"]["templates"][1]["container"]["env"]
