"""The start-up hook: plain `swift` use finds `moon` without --external_plugins, at no import cost."""

import subprocess
import sys

from helpers import REPO_ROOT

PROBE = """
import sys
hook = 'moon_swift.integrations.swift.autoload'
print('startup', 'torch' in sys.modules, 'swift' in sys.modules, hook in sys.modules)
from swift.model import MODEL_MAPPING
from swift.template import TEMPLATE_MAPPING
print('registered', 'moon' in MODEL_MAPPING, 'moon' in TEMPLATE_MAPPING)
"""


def _probe(env=None, code=PROBE):
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())


def test_installed_package_registers_moon_when_swift_is_imported_without_loading_torch_at_startup():
    lines = _probe()
    assert lines["startup"] == "False False True"  # the hook is there; torch and swift are not
    assert lines["registered"] == "True True"


def test_the_hook_can_be_switched_off():
    assert _probe({"MOON_SWIFT_AUTOLOAD": "0"})["registered"] == "False False"


SHIM_PROBE = f"""
import runpy
from swift.model import MODEL_MAPPING
from swift.template import TEMPLATE_MAPPING
print('before', 'moon' in MODEL_MAPPING, 'moon' in TEMPLATE_MAPPING)
runpy.run_path({str(REPO_ROOT / "registry" / "moon.py")!r})
print('after', 'moon' in MODEL_MAPPING, 'moon' in TEMPLATE_MAPPING)
"""


def test_external_plugins_shim_registers_everything():
    lines = _probe({"MOON_SWIFT_AUTOLOAD": "0"}, SHIM_PROBE)
    assert lines["before"] == "False False" and lines["after"] == "True True"


EVAL_PROBE = """
from swift.arguments import EvalArguments
from swift.pipelines import eval_main  # what `swift eval` imports first
datasets = EvalArguments.list_eval_dataset("Native")["Native"]
print('benchmarks', *[name for name in datasets if name.startswith('moon_')])
"""


def test_swift_eval_finds_the_moon_benchmarks_without_opencompass():
    """swift 4.6 lists OpenCompass datasets even for the Native backend; moon keeps that from failing."""
    assert _probe(code=EVAL_PROBE)["benchmarks"] == "moon_attributes moon_classification moon_retrieval"
