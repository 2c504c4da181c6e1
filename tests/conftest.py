import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LIFECYCLE_THREADS", "2")

# Modules that take minutes, in the order pytest-xdist should hand them out (it follows collection order):
# test_e2e builds the session's micro run first, test_own_data (which does not copy it) runs meanwhile, the other
# long modules follow, longest first (measured), and the short modules fill the gaps at the end.
LONGEST_FIRST = ["test_e2e", "test_own_data", "test_broken_inputs", "test_reproducible", "test_clean", "test_servers",
                 "test_remote", "test_distributed", "test_lock", "test_resume", "test_catalogue", "test_harness",
                 "test_training"]


def pytest_collection_modifyitems(config, items):
    """The longest modules first. With `--dist loadscope` a module is one unit of work: its module-scoped fixture
    (a micro project, a trained model) is built once, on one worker."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


@dataclass(frozen=True)
class MicroRun:
    root: Path  # never changed by a test: copy it (tests.micro.copy_project)
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> MicroRun:
    """One `lifecycle run --profile micro` as a user runs it (a temporary Prefect server, its own MLflow store),
    with secrets planted in its environment. The first pytest-xdist worker that asks builds it; the others wait
    for it and read the same directory."""
    from tests.micro import SECRETS, lifecycle, make_project

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, out, err, failed = (shared / name for name in ("micro-run", "micro-run.out", "micro-run.err",
                                                         "micro-run.failed"))
    with FileLock(str(shared / "micro-run.lock")):
        if failed.exists():
            pytest.fail(failed.read_text())
        if not out.exists():
            root.mkdir()
            make_project(root)
            proc = lifecycle(root, "run", "--profile", "micro", env=SECRETS, temporary_server=True, check=False)
            if proc.returncode != 0:
                failed.write_text(f"the session's micro run failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                  f"{proc.stderr[-4000:]}")
                pytest.fail(failed.read_text())
            err.write_text(proc.stderr)
            out.write_text(proc.stdout)  # last: its presence says the run is complete
    return MicroRun(root, out.read_text(), err.read_text())
