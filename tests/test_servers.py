"""Real servers on loopback: a Prefect server and an MLflow server, the flow served on a cron schedule and
triggered, one stage sent to a process-pool worker as a deployment, its MLflow child run on the server."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines import servers
from tests.micro import MICRO, make_project

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def api(base: str, path: str, body: dict | None = None) -> dict | list:
    """One Prefect REST call; a 503 (SQLite busy on a loaded machine) is retried, as Prefect's own client does."""
    for attempt in range(8):
        request = urllib.request.Request(base + path, method="POST" if body is not None else "GET",
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 7:
                raise
            time.sleep(1 + attempt)


def wait_for(what: str, probe, timeout_s: float, procs: dict[str, subprocess.Popen], logs: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                     f"{(logs / f'{name}.log').read_text()[-4000:]}")
        time.sleep(1)
    tails = "\n".join(f"--- {n}\n{(logs / f'{n}.log').read_text()[-3000:]}" for n in procs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.mark.timeout(900)
def test_scheduled_flow_sends_a_stage_to_a_process_worker_and_logs_to_the_mlflow_server(tmp_path):
    project = make_project(tmp_path / "project")
    subprocess.run([PY, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store")], cwd=project,
                   check=True, capture_output=True)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "micro project")
    logs = tmp_path / "logs"
    logs.mkdir()
    prefect_port, mlflow_port = servers.free_port(), servers.free_port()
    (tmp_path / "servers").mkdir()
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    server = subprocess.Popen([PY, "-m", "pipelines.cli", "server", "--prefect-port", str(prefect_port),
                               "--mlflow-port", str(mlflow_port)], cwd=tmp_path / "servers", env=server_env,
                              stdout=open(logs / "server.log", "wb"), stderr=subprocess.STDOUT)
    try:
        client = servers.client_env("127.0.0.1", prefect_port, mlflow_port)
        prefect_api, mlflow_uri = client["PREFECT_API_URL"], client["MLFLOW_TRACKING_URI"]
        wait_for("the servers", lambda: "Ctrl-C stops both" in (logs / "server.log").read_text(), 240,
                 {"server": server}, logs)
        assert all(servers._healthy(url) for _, _, url in servers.commands(tmp_path, "127.0.0.1", prefect_port,
                                                                            mlflow_port).values())
        assert prefect_api.startswith("http://127.0.0.1:") and mlflow_uri.startswith("http://127.0.0.1:")
        # the server's stage host, as it prints it: the scheduled runs fork their stages from it
        host = re.search(r"export LIFECYCLE_STAGE_HOST=(\S+)", (logs / "server.log").read_text()).group(1)
        assert Path(host).is_socket()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(client, LIFECYCLE_STAGE_HOST=host, PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="2",
                   PREFECT_RUNNER_POLL_FREQUENCY="1", LIFECYCLE_THREADS="1", LIFECYCLE_GIT_REPO=str(project),
                   LIFECYCLE_PROJECT_DIR=str(project))

        def cli(*args: str, cwd: Path = project) -> str:
            proc = subprocess.run([PY, "-m", "prefect", *args], cwd=cwd, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            return proc.stdout

        # work pools from the shipped base job templates; the Kubernetes one must be accepted by the server too
        for pool, kind, template in (("gpu", "process", "process.json"), ("cpu", "process", "process.json"),
                                     ("k8s-gpu", "kubernetes", "kubernetes-gpu.json")):
            cli("work-pool", "create", pool, "--type", kind, "--base-job-template", f"deploy/work-pools/{template}")
        k8s = api(prefect_api, "/work_pools/k8s-gpu")
        manifest = k8s["base_job_template"]["job_configuration"]["job_manifest"]
        assert "nvidia.com/gpu" in manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        # prefect.yaml: both deployments register; the nightly one with its cron schedule
        cli("--no-prompt", "deploy", "--all")
        nightly = api(prefect_api, "/deployments/name/lifecycle/nightly")
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
        stage_deployment = api(prefect_api, "/deployments/name/lifecycle-stage/gpu")
        assert stage_deployment["work_pool_name"] == "gpu"

        procs: dict[str, subprocess.Popen] = {}
        try:
            worker_dir = tmp_path / "worker"
            worker_dir.mkdir()
            procs["worker"] = subprocess.Popen(
                [PY, "-m", "prefect", "worker", "start", "--pool", "gpu", "--type", "process", "--name", "gpu-1"],
                cwd=worker_dir, env=env, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT)
            sets = [a for s in [*MICRO, "orchestration.gpu_stages=[tokenizer]"] for a in ("--set", s)]
            procs["serve"] = subprocess.Popen(
                [PY, "-m", "pipelines.cli", "serve", "--cron", "30 3 * * *", "--name", "every-night",
                 "--target", "tokenizer", *sets],
                cwd=project, env=env, stdout=open(logs / "serve.log", "wb"), stderr=subprocess.STDOUT)

            def served() -> dict | None:
                try:
                    return api(prefect_api, "/deployments/name/lifecycle/every-night")
                except OSError:
                    return None

            deployment = wait_for("the served deployment", served, 120, procs, logs)
            assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["30 3 * * *"]
            assert deployment["parameters"]["targets"] == ["tokenizer"]
            run = api(prefect_api, f"/deployments/{deployment['id']}/create_flow_run", {})

            def finished() -> dict | None:
                state = api(prefect_api, f"/flow_runs/{run['id']}")["state"]
                return state if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

            state = wait_for("the triggered flow run", finished, 600, procs, logs)
            assert state["type"] == "COMPLETED", (state, (logs / "serve.log").read_text()[-5000:],
                                                  (logs / "worker.log").read_text()[-5000:])
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

        # the stage ran as a flow run of the GPU deployment, picked up by the process worker
        stage_runs = api(prefect_api, "/flow_runs/filter",
                         {"deployments": {"id": {"any_": [stage_deployment["id"]]}}})
        assert [(r["state"]["type"], r["parameters"]["stage"], r["work_pool_name"]) for r in stage_runs] == [
            ("COMPLETED", "tokenizer", "gpu")]
        assert "gpu-1" in (logs / "worker.log").read_text()
        timings = json.loads((project / "reports" / "timings.json").read_text())
        assert {s["stage"]: s["status"] for s in timings["stages"]} == {"clean": "ran", "tokenizer": "remote"}
        assert timings["stages"][0]["started"] == "host"  # forked by the server's stage host

        # MLflow server: one parent run, a child run per stage (the tokenizer's logged from the worker's clone)
        import mlflow

        mlflow_client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
        experiment = mlflow_client.get_experiment_by_name("lifecycle")
        runs = mlflow_client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("pipeline") == "lifecycle"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        children = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")
                    == parents[0].info.run_id}
        assert set(children) == {"clean", "tokenizer"}
        assert children["tokenizer"].data.metrics["vocab_size"] == 320

        # the orchestrator's dvc.lock records the stage the worker ran: DVC finds it up to date here
        status = subprocess.run([PY, "-m", "dvc", "status", "tokenizer"], cwd=project, capture_output=True,
                                text=True, env=env)
        assert "up to date" in status.stdout, status.stdout
    finally:
        server.terminate()  # `lifecycle server` stops both servers on SIGTERM (and Ctrl-C)
        server.wait(timeout=60)
    assert server.returncode == 0, (logs / "server.log").read_text()[-3000:]
    assert (tmp_path / "servers" / "mlflow" / "mlflow.db").exists()  # SQLite stores under the project
    assert (tmp_path / "servers" / ".prefect" / "prefect.db").exists()
    # servers stopped: nothing answers on their ports any more
    for port in (prefect_port, mlflow_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
