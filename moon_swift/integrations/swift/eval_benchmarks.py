"""``swift eval`` for MOON: three evalscope benchmarks over the deployed embeddings endpoint.

``swift eval`` deploys the checkpoint, then runs evalscope's Native backend against the service
URL. These benchmarks (``moon_retrieval``, ``moon_classification``, ``moon_attributes``) encode
the catalog through ``/v1/embeddings`` once per run and report, item by item, exactly the outcomes
``moon-swift eval`` computes (:func:`moon_swift.eval.run.evaluate_outcomes`), so both commands
give the same figures. Registered by :mod:`moon_swift.integrations.swift.registration`.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from typing import Any

from evalscope.api.benchmark import BenchmarkMeta, DefaultDataAdapter
from evalscope.api.dataset import DatasetDict, MemoryDataset, Sample
from evalscope.api.evaluator import TaskState
from evalscope.api.metric import AggScore, SampleScore, Score
from evalscope.api.model import Model, ModelOutput
from evalscope.api.registry import BENCHMARK_REGISTRY, register_benchmark

from ...data.records import ProductRecord
from ...data.sources import CATALOG_FORMATS, load_products
from ...eval.metrics import classification_metrics
from ...eval.run import evaluate_outcomes, retrieval_directions, retrieval_queries, task_names
from ...eval.service import ServiceEncoder
from ...eval.tasks import ClassificationOutcome, Outcome, RetrievalOutcome, attribute_truth, level_truth

#: benchmark name -> the task group it reports (the prefix of :func:`task_names`).
MOON_BENCHMARKS = {"moon_retrieval": "retrieval", "moon_classification": "classification",
                   "moon_attributes": "attributes"}  # fmt: skip

_EXTRA_PARAMS = {
    "format": {
        "type": "str",
        "value": "records",
        "choices": list(CATALOG_FORMATS),
        "description": "catalog format of dataset_id (as `moon-swift eval --format`)",
    },
    "pairs": {"type": "str", "value": "", "description": "behaviour pairs CSV/JSONL (query -> product_id)"},
    "on_bad_row": {"type": "str", "value": "error", "choices": ["error", "skip"], "description": "bad rows"},
    "limit": {"type": "int", "value": 0, "description": "read at most this many products (0: all)"},
    "index": {"type": "str", "value": "flat", "choices": ["flat", "ivf", "hnsw"], "description": "faiss index"},
    "workers": {"type": "int", "value": 8, "description": "embedding requests in flight at once"},
}

# Every benchmark of one run shares one encoding pass: (url, model, data options) -> outcomes.
_OUTCOMES: dict[tuple, dict[str, Outcome]] = {}
_OUTCOMES_LOCK = threading.Lock()


class MoonProductsAdapter(DefaultDataAdapter):
    """Samples are evaluation items (a query, or a product to classify); "inference" looks up the
    item's outcome from one batched evaluation through the service; scores are per-item metrics
    whose means are the task metrics."""

    group = ""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.add_overall_metric = False  # recall of one task and accuracy of another do not average

    def _data_options(self) -> dict[str, Any]:
        params = self.extra_params
        return {
            "path": self.dataset_id,
            "format": params["format"],
            "pairs": params["pairs"] or None,
            "on_bad_row": params["on_bad_row"],
            "limit": params["limit"] or None,
        }

    def load(self) -> tuple[DatasetDict, None]:
        options = self._data_options()
        self._records, self._pairs = load_products(**options)
        subsets = {}
        for task in task_names(self._records, self._pairs):
            group, _, name = task.partition("/")
            if group == self.group:
                samples = self._samples(task)
                subsets[name] = MemoryDataset(samples, name=name)
        self.subset_list = list(subsets)
        return DatasetDict(subsets), None

    def _samples(self, task: str) -> list[Sample]:
        group, _, name = task.partition("/")
        records: Sequence[ProductRecord] = self._records
        if group == "retrieval":
            direction = next(d for d in retrieval_directions(self._pairs) if name == f"{d}->product")
            if direction == "title":
                items = [(r.title, r.product_id) for r in records]
            else:
                items = [(" ".join(part for part in (f"<image> {p.query_image}" if p.query_image else "",
                                                     p.query_text or "") if part), p.product_id)
                         for p in retrieval_queries(self._pairs, direction)]  # fmt: skip
        else:  # the products, in the order, of the task's outcome
            if group == "classification":
                rows, truth = level_truth(records, int(name.removeprefix("level")) - 1)
            else:
                rows, truth = attribute_truth(records, name)
            items = [(records[i].title, label) for i, label in zip(rows, truth, strict=True)]
        return [Sample(input=text, target=target, id=i, metadata={"task": task, "item": i})
                for i, (text, target) in enumerate(items)]  # fmt: skip

    def _outcomes(self) -> dict[str, Outcome]:
        config = self._task_config
        served = config.model if isinstance(config.model, str) else config.model_id
        api_key = config.api_key.get_secret_value() if config.api_key is not None else "EMPTY"
        options = self._data_options()
        key = (config.api_url, served, json.dumps(options, sort_keys=True), self.extra_params["index"])
        with _OUTCOMES_LOCK:
            if key not in _OUTCOMES:
                encoder = ServiceEncoder(config.api_url, model=served, api_key=api_key,
                                         workers=self.extra_params["workers"])  # fmt: skip
                _OUTCOMES[key] = evaluate_outcomes(encoder, self._records, self._pairs,
                                                   index=self.extra_params["index"], name=served)  # fmt: skip
            return _OUTCOMES[key]

    def _on_inference(self, model: Model, sample: Sample) -> ModelOutput:
        outcome = self._outcomes()[sample.metadata["task"]]
        item = sample.metadata["item"]
        if isinstance(outcome, RetrievalOutcome):
            answer = " ".join(self._records[int(i)].product_id for i in outcome.top[item] if i >= 0)
        else:
            answer = outcome.labels[int(outcome.predicted[item])]
        return ModelOutput.from_content(model=model.name, content=answer)

    def match_score(self, original_prediction: str, filtered_prediction: str, reference: str,
                    task_state: TaskState) -> Score:  # fmt: skip
        outcome = self._outcomes()[task_state.metadata["task"]]
        values = outcome.item_metrics(task_state.metadata["item"])
        main = "recall@1" if isinstance(outcome, RetrievalOutcome) else "accuracy"
        return Score(value=values, prediction=original_prediction, extracted_prediction=filtered_prediction,
                     main_score_name=main)  # fmt: skip

    def aggregate_scores(self, sample_scores: list[SampleScore]) -> list[AggScore]:
        """The means, plus macro-F1 for classification (not a mean of per-item values)."""
        scores = super().aggregate_scores(sample_scores)
        if sample_scores:
            outcome = self._outcomes()[sample_scores[0].sample_metadata["task"]]
            if isinstance(outcome, ClassificationOutcome):
                items = [s.sample_metadata["item"] for s in sample_scores]
                macro_f1 = classification_metrics(outcome.predicted[items], outcome.truth[items])["macro_f1"]
                scores.append(AggScore(score=macro_f1, metric_name="macro_f1", num=len(items)))
        return scores


def _meta(name: str, group: str, metrics: list[str]) -> BenchmarkMeta:
    return BenchmarkMeta(
        name=name,
        pretty_name=f"MOON {group}",
        dataset_id="",
        description=f"MBE-style {group} on product embeddings from a served MOON model (moon-swift). Set "
        f"dataset_args.{name}.dataset_id to a product catalog; extra_params as `moon-swift eval`.",
        tags=["Retrieval", "MultiModal"],
        metric_list=metrics,
        prompt_template="{question}",
        extra_params=json.loads(json.dumps(_EXTRA_PARAMS)),
    )


def tolerate_missing_opencompass() -> None:
    """swift 4.6's ``EvalArguments`` lists OpenCompass's datasets for every backend, so without the
    optional ``opencompass`` package even a Native-backend ``swift eval`` dies on an ImportError.
    With opencompass absent, its dataset list is empty instead (choosing that backend still fails). A patch,
    as evalscope offers no extension point there; ``tests/integrations/swift/test_patches.py`` fails when
    the patched function changes."""
    from evalscope.backend.opencompass import OpenCompassBackendManager

    original = OpenCompassBackendManager.list_datasets
    if getattr(original, "moon_tolerant", False):
        return

    @functools.wraps(original)
    def list_datasets(*args: Any, **kwargs: Any):
        try:
            import opencompass  # noqa: F401
        except ImportError:
            return []
        return original(*args, **kwargs)

    list_datasets.moon_tolerant = True
    OpenCompassBackendManager.list_datasets = staticmethod(list_datasets)


def register_benchmarks() -> None:
    """Idempotent: each benchmark gets its own adapter subclass (evalscope keys by the class's module)."""
    specs = {
        "moon_retrieval": ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"],
        "moon_classification": ["accuracy", "macro_f1"],
        "moon_attributes": ["accuracy", "macro_f1"],
    }
    for name, metrics in specs.items():
        if name in BENCHMARK_REGISTRY:
            continue
        group = MOON_BENCHMARKS[name]
        adapter = type(f"Moon{group.title()}Adapter", (MoonProductsAdapter,), {"group": group, "__module__": __name__})
        register_benchmark(_meta(name, group, metrics))(adapter)
    tolerate_missing_opencompass()
