"""moon_infonce's temporal-queue modes against hand-written references, the collapse monitors and the rule."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from losses.test_moon_infonce import TrainerDouble, batch, reference

from moon_swift.core.errors import MoonInputError
from moon_swift.losses.collapse_monitor import CollapseRule, monitors, spread
from moon_swift.losses.moon_infonce import MoonInfoNCELoss, MoonInfoNCEOptions

TEMPERATURE = 0.05


def make(**options) -> MoonInfoNCELoss:
    return MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), TrainerDouble(), MoonInfoNCEOptions(**options))


def own_positive_against_queue(anchors, positives, positive_ids, queue, queue_ids, temperature=TEMPERATURE):
    """Loop reference of split mode's queue term."""
    losses = []
    for anchor, positive, pid in zip(anchors, positives, positive_ids, strict=True):
        logits = [float(anchor @ positive) / temperature]
        logits += [float(anchor @ q) / temperature for q, qid in zip(queue, queue_ids, strict=True) if qid != pid]
        losses.append(math.log(sum(math.exp(v) for v in logits)) - logits[0])
    return sum(losses) / len(losses)


def uniformity_reference(vectors, t=2.0):
    n = len(vectors)
    values = [math.exp(-t * float((vectors[i] - vectors[j]).pow(2).sum())) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(values) / len(values))


def two_steps(loss_fn, keys=False):
    """Step 0 fills the queue (samples with one negative each: products are rows 1, 2, 4, 5); step 1 uses it."""
    first, labels = batch([1, 1], seed=1)
    ids_first = torch.arange(100, 106)
    if keys:
        loss_fn.momentum_keys = F.normalize(first + 0.3, dim=-1)
    loss_fn({"last_hidden_state": first, "group_ids": ids_first}, labels)
    loss_fn.trainer.state.global_step = 1
    second, labels = batch([1, 1], seed=2)
    ids_second = torch.arange(200, 206)
    ids_second[1] = ids_first[1]  # this positive's product is queued: never its own negative
    return first, ids_first, second, ids_second, labels


def test_split_mode_adds_a_separate_queue_term_and_uniformity():
    loss_fn = make(queue_size=8, queue_mode="split", queue_weight=0.3, uniformity=0.2)
    first, ids_first, second, ids_second, labels = two_steps(loss_fn)
    loss = loss_fn({"last_hidden_state": second, "group_ids": ids_second}, labels)

    products, queued_rows = [1, 2, 4, 5], [1, 2, 4, 5]
    fresh = reference(second, labels, ids_second.tolist())  # the batch's softmax holds no queued embedding
    queue_term = own_positive_against_queue(second[[0, 3]], second[[1, 4]], [int(ids_second[1]), int(ids_second[4])],
                                            first[queued_rows], [int(ids_first[r]) for r in queued_rows])  # fmt: skip
    expected = fresh + 0.3 * queue_term + 0.2 * uniformity_reference(second[products])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert len(loss_fn.queue) == 8  # fresh embeddings queued, as in fifo


def test_momentum_mode_contrasts_with_the_key_encoders_batch_and_queue():
    loss_fn = make(queue_size=8, queue_mode="momentum", queue_weight=0.5)
    first, ids_first, second, ids_second, labels = two_steps(loss_fn, keys=True)
    first_keys = F.normalize(first + 0.3, dim=-1)
    assert torch.allclose(loss_fn.queue.candidates(1)[0].double(), first_keys[[1, 2, 4, 5]], atol=1e-6)  # keys queued

    keys = F.normalize(second - 0.2, dim=-1)
    loss_fn.momentum_keys = keys
    loss = loss_fn({"last_hidden_state": second, "group_ids": ids_second}, labels)
    fresh = reference(second, labels, ids_second.tolist())
    # the anchors (fresh) against the keys: the rows' own keys stand in for the products, then the queued keys
    with_keys = torch.cat([second[[0]], keys[[1, 2]], second[[3]], keys[[4, 5]]])
    queue = (first_keys[[1, 2, 4, 5]], [int(ids_first[r]) for r in (1, 2, 4, 5)])
    key_term = reference(with_keys, labels, ids_second.tolist(), queue=queue)
    assert loss.item() == pytest.approx(fresh + 0.5 * key_term, rel=1e-6)


def test_momentum_mode_without_keys_is_a_clear_error():
    loss_fn = make(queue_size=8, queue_mode="momentum")
    embeddings, labels = batch([1, 1])
    with pytest.raises(MoonInputError, match="MOON_INFONCE_QUEUE_MODE=momentum needs the momentum encoder"):
        loss_fn({"last_hidden_state": embeddings}, labels)


def test_evaluation_needs_no_keys_and_adds_no_queue_term():
    loss_fn = make(queue_size=8, queue_mode="momentum")
    loss_fn.trainer.model.training = False
    embeddings, labels = batch([1, 1])
    ids = torch.arange(6)
    loss = loss_fn({"last_hidden_state": embeddings, "group_ids": ids}, labels)
    assert loss.item() == pytest.approx(reference(embeddings, labels, ids.tolist()), rel=1e-9)


def test_fifo_is_an_explicit_choice_that_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="moon_swift.loss"):
        make(queue_size=8, queue_mode="fifo")
    assert "MOON_INFONCE_QUEUE_MODE=fifo" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="moon_swift.loss"):
        make(queue_size=8, queue_mode="split")
    assert caplog.text == ""


def test_monitors_tell_a_collapsed_batch_from_a_spread_one():
    spread_out = torch.eye(4, dtype=torch.float64)
    collapsed = F.normalize(torch.ones(4, 4, dtype=torch.float64) + 1e-3 * spread_out, dim=-1)
    assert spread(spread_out) == pytest.approx({"product_mean_cosine": 0.0, "embedding_std": 0.5})
    assert spread(collapsed)["product_mean_cosine"] > 0.999 and spread(collapsed)["embedding_std"] < 1e-3

    anchors = torch.eye(4, dtype=torch.float64)[:2]
    products = torch.eye(4, dtype=torch.float64)
    products[3] = F.normalize(torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64), dim=0)  # near anchor 0
    groups = torch.arange(4)
    queue = (F.normalize(torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64), dim=-1), torch.tensor([9]))
    found = monitors(anchors, products, groups, torch.tensor([0, 1]), queue)
    assert found["positive_similarity"] == pytest.approx(1.0)
    assert found["hardest_batch_negative_similarity"] == pytest.approx((2**-0.5 + 0.0) / 2)
    assert found["hardest_queue_negative_similarity"] == pytest.approx(2**-0.5)
    assert found["margin"] == pytest.approx(1 - 2**-0.5)


def test_the_collapse_rule_turns_the_queue_off_after_its_patience(caplog):
    rule = CollapseRule(patience=3)
    collapsed, healthy = {"product_mean_cosine": 0.995, "margin": -0.002}, {"product_mean_cosine": 0.995, "margin": 0.2}
    assert [rule.observe(s, i) for i, s in enumerate([collapsed, collapsed, healthy, collapsed, collapsed])] == [
        False] * 5  # fmt: skip
    assert rule.observe(collapsed, 5) is True and rule.tripped_at == 5
    assert rule.observe(collapsed, 6) is False  # once
    assert CollapseRule(patience=0).observe(collapsed, 0) is False

    # in the loss: identical embeddings everywhere are a collapse; the queue goes off, with one warning line
    loss_fn = make(queue_size=64, queue_mode="split", collapse_patience=2)
    same = F.normalize(torch.ones(6, 4, dtype=torch.float64), dim=-1)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    with caplog.at_level(logging.WARNING, logger="moon_swift.loss"):
        for step in range(4):
            loss_fn.trainer.state.global_step = step
            loss_fn({"last_hidden_state": same, "group_ids": torch.arange(6) + 10 * step}, labels)
    in_use = loss_fn.trainer.custom_metrics["train"]["moon_infonce/queue_in_use"].values
    assert in_use == [0.0, 1.0, 1.0, 0.0]  # step 0: empty; steps 1, 2: collapse twice; then off
    assert not loss_fn.queue_enabled and "collapse at step 2" in caplog.text


def test_a_queue_turned_off_stays_off_after_resume(tmp_path):
    loss_fn = make(queue_size=8, queue_mode="split", collapse_patience=1)
    loss_fn.collapse.tripped_at, loss_fn.queue_enabled = 7, False
    loss_fn.save_queue(tmp_path)
    resumed = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=str(tmp_path)), TrainerDouble(),
                              MoonInfoNCEOptions(queue_size=8, queue_mode="split"))  # fmt: skip
    embeddings, labels = batch([1, 1])
    resumed({"last_hidden_state": embeddings}, labels)
    assert not resumed.queue_enabled and len(resumed.queue) == 0


@pytest.mark.parametrize("change", ["mode", "model"])
def test_a_saved_queue_of_another_mode_or_model_is_refused(tmp_path, change):
    saved = make(queue_size=8, queue_mode="split")
    saved.model_identity = "aaaa"
    embeddings, labels = batch([1, 1])
    saved({"last_hidden_state": embeddings}, labels)
    saved.save_queue(tmp_path)
    mode, identity = ("fifo", "aaaa") if change == "mode" else ("split", "bbbb")
    resumed = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=str(tmp_path)), TrainerDouble(),
                              MoonInfoNCEOptions(queue_size=8, queue_mode=mode))  # fmt: skip
    resumed.model_identity = identity
    with pytest.raises(MoonInputError) as error:
        resumed({"last_hidden_state": embeddings}, labels)
    message = str(error.value)
    if change == "mode":
        assert "holds split embeddings but MOON_INFONCE_QUEUE_MODE is fifo" in message
    else:
        assert "made by another model" in message and "aaaa" in message and "bbbb" in message


@pytest.mark.parametrize(
    ("options", "named"),
    [({"queue_mode": "ema"}, "queue_mode"), ({"momentum": 1.0}, "momentum"), ({"queue_weight": -1.0}, "queue")],
)
def test_bad_mode_options_are_named(options, named):
    with pytest.raises(MoonInputError) as error:
        MoonInfoNCEOptions(**options)
    assert error.value.field == named
