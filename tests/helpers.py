"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

from moon_swift.integrations.swift.exit_abort import EXIT_TIME_ABORT, aborted_after_finishing

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FASHION_CATALOG = SHARED_DATA / "fashion-catalog-dev"
STREET_PHOTOS = SHARED_DATA / "street-photos"


def load_script(path: Path) -> ModuleType:
    """A script outside the package (``benchmarks/*.py``) imported by path, as ``<its stem>_under_test``."""
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def swift_executable() -> str:
    return str(Path(sys.executable).with_name("swift"))


def run_cli(args: list[str], *, cwd: Path = REPO_ROOT, env: dict | None = None, timeout: float = 900):
    """Run a console command of this environment; returns the CompletedProcess (output merged).

    A swift run that finished and then aborted at interpreter exit (:data:`EXIT_TIME_ABORT`) is run once more
    from an empty ``--output_dir``, with a warning, so the tests judge a run that exited cleanly; not when it
    resumes from a checkpoint inside its own output folder (that would be lost), and never more than once."""
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}

    def run():
        return subprocess.run(
            args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )

    result = run()
    if result.returncode == 0 or not aborted_after_finishing(result.stdout):
        return result
    output_dir = _option(args, "--output_dir")
    resume = _option(args, "--resume_from_checkpoint")
    if output_dir is None or (resume is not None and Path(output_dir).resolve() in Path(resume).resolve().parents):
        return result
    command = f"{Path(args[0]).name} {args[1]}"
    warnings.warn(f"{command}: aborted at exit after finishing ({EXIT_TIME_ABORT!r}); rerun once", stacklevel=2)
    shutil.rmtree(output_dir, ignore_errors=True)
    return run()


def _option(args: list[str], name: str) -> str | None:
    values = [str(args[i + 1]) for i, arg in enumerate(args[:-1]) if str(arg) == name]
    return values[-1] if values else None


#: `swift sft` options of the runs that compare gradients: two steps of plain SGD without clipping or warm-up (every
#: weight update is proportional to its gradient; Adam would hide a wrong scale), rows in file order, logs at every
#: step and the weights saved after the second
TWO_SGD_STEPS = ("--max_steps", "2", "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2",
                 "--save_only_model", "true", "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
                 "--optim", "sgd", "--learning_rate", "0.05", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
                 "--max_grad_norm", "0")  # fmt: skip


#: the moon_infonce / infonce settings of the gradient comparisons: spatial negatives on, no queue
COMPARED_LOSS_ENV = {"MOON_INFONCE_SPATIAL": "true", "MOON_INFONCE_QUEUE_SIZE": "0", "INFONCE_USE_BATCH": "true"}


def rows_with_two_negatives(root: Path, count: int = 8) -> Path:
    """``root/rows.jsonl``: the first ``count`` rows of the dev catalog's ``prepare-data --hard-negatives 2`` that
    have both negatives (the gradient comparisons need every row the same shape)."""
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(root / "data"), "--limit", "16", "--hard-negatives", "2"]  # fmt: skip
    result = run_cli(command)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = (root / "data" / "train.jsonl").read_text().splitlines()
    rows = [line for line in lines if len(json.loads(line).get("negative_messages") or []) == 2][:count]
    assert len(rows) == count
    (root / "rows.jsonl").write_text("\n".join(rows) + "\n")
    return root / "rows.jsonl"


def logged_steps(out: Path) -> list[dict]:
    """The per-step entries of a run's ``logging.jsonl`` (loss, grad_norm, ...)."""
    entries = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    return [entry for entry in entries if "loss" in entry and "global_step/max_steps" in entry]


def relative(a, b) -> float:
    """``|a - b| / |a|`` in float64 (tensors or numbers)."""
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


def write_generic_catalog(root: Path) -> tuple[Path, Path]:
    """4 real photos as a generic JSONL catalog (2 categories, 2 colours) + 3 behaviour pairs: a text query,
    a photo query (a real street photo) and a photo + text query."""
    (root / "img").mkdir()
    products = []
    for i, name in enumerate(["10002.jpg", "10005.jpg", "10008.jpg", "10011.jpg"]):
        shutil.copy(FASHION_CATALOG / "images" / name, root / "img" / name)
        products.append({"product_id": f"P{i}", "title": f"product {i}", "images": [f"img/{name}"],
                         "category_path": ["Apparel", "Skirts" if i % 2 else "Tshirts"],
                         "attributes": {"colour": "Blue" if i < 2 else "Grey"}})  # fmt: skip
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(p) + "\n" for p in products))
    pairs = root / "pairs.jsonl"
    street = sorted((STREET_PHOTOS / "train" / "skirt").glob("*.jpg"))[0]
    shutil.copy(street, root / "img" / "street_skirt.jpg")
    pairs.write_text(
        json.dumps({"query_text": "blue tee", "product_id": "P0"}) + "\n"
        + json.dumps({"query_image": "img/street_skirt.jpg", "product_id": "P1"}) + "\n"
        + json.dumps({"query_image": "img/street_skirt.jpg", "query_text": "grey skirt", "product_id": "P3"}) + "\n"
    )  # fmt: skip
    return catalog, pairs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(process: subprocess.Popen, log: Path, url: str, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"swift deploy exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"swift deploy did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def swift_deploy(model_dir: Path, log: Path, *, name: str = "moon-tiny", env: dict | None = None):
    """`swift deploy --model_type moon` on a free loopback port; yields the OpenAI base URL.

    ``env`` replaces the environment's moon variables (``MOON_*`` are dropped unless given)."""
    port = free_port()
    command = [swift_executable(), "deploy", "--model", str(model_dir), "--model_type", "moon",
               "--task_type", "embedding", "--infer_backend", "transformers", "--host", "127.0.0.1",
               "--port", str(port), "--served_model_name", name]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOON_") or k == "MOON_SWIFT_AUTOLOAD"}
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**clean, "TOKENIZERS_PARALLELISM": "false", **(env or {})})  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_server(process, log, url)
        yield url
    finally:  # the `swift` launcher runs the server as a child: stop the whole process group
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
