"""moon_infonce against a plain reference (full logit matrix, explicit masks), gradients, and 2 processes."""

from __future__ import annotations

import math
import os
import socket
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from moon_swift.core.errors import MoonInputError
from moon_swift.losses.moon_infonce import BatchLayout, MoonInfoNCELoss, MoonInfoNCEOptions, infonce_with_masks


class _Mean:
    def __init__(self):
        self.values = []

    def update(self, value):
        self.values.append(float(value))


class TrainerDouble:
    """The few trainer attributes the loss reads (a stand-in for swift's Trainer in unit tests)."""

    def __init__(self):
        self.state = SimpleNamespace(global_step=0)
        self.custom_metrics = {"train": defaultdict(_Mean), "eval": defaultdict(_Mean)}
        self.model = SimpleNamespace(training=True)
        self.callbacks = []

    def add_callback(self, callback):
        self.callbacks.append(callback)


def make_loss(monkeypatch, **options):
    # the queue's mechanics (age, warm-up, masking, resume) are checked on the single-softmax mode, whose loss the
    # reference below computes; the other modes have their own tests (test_queue_modes.py)
    options.setdefault("queue_mode", "fifo")
    return MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), TrainerDouble(), MoonInfoNCEOptions(**options))


def batch(negatives_per_sample, dim=8, seed=0):
    """Normalised embeddings in swift's layout + labels: per sample anchor, positive, negatives."""
    generator = torch.Generator().manual_seed(seed)
    rows = sum(2 + n for n in negatives_per_sample)
    embeddings = F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.tensor([v for n in negatives_per_sample for v in [1.0] + [0.0] * n])
    return embeddings, labels


def reference(embeddings, labels, groups, queue=None, temperature=0.05):
    """Token-by-token clear version: every anchor against every product row (+ queue), masks by id."""
    anchors, positives, products = [], [], []
    row = 0
    for label in labels.tolist():
        if label == 1:
            anchors.append(row)
            positives.append(len(products))
            products.append(row + 1)
            row += 2
        else:
            products.append(row)
            row += 1
    candidates = [embeddings[r] for r in products]
    candidate_groups = [groups[r] for r in products]
    if queue is not None:
        candidates += list(queue[0])
        candidate_groups += queue[1]
    losses = []
    for anchor, positive in zip(anchors, positives, strict=True):
        logits = []
        for j, (candidate, group) in enumerate(zip(candidates, candidate_groups, strict=True)):
            if j != positive and group is not None and group == candidate_groups[positive]:
                continue  # false negative: same product / group as the positive
            logits.append((j == positive, float(embeddings[anchor] @ candidate) / temperature))
        target = next(value for is_positive, value in logits if is_positive)
        losses.append(math.log(sum(math.exp(value) for _, value in logits)) - target)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("negatives_per_sample", [[0, 0, 0], [2, 2, 2], [3, 0, 1]])
@pytest.mark.parametrize("shared_ids", [False, True])
def test_in_batch_and_hard_negatives_match_the_reference(monkeypatch, negatives_per_sample, shared_ids):
    embeddings, labels = batch(negatives_per_sample)
    groups = [f"p{i}" for i in range(len(embeddings))]
    if shared_ids:  # the second sample's positive is the same product as the first sample's positive
        groups[1] = groups[1 + 2 + negatives_per_sample[0]] = "same"
    group_ids = torch.tensor([hash(g) % 10**9 for g in groups])
    loss = make_loss(monkeypatch)({"last_hidden_state": embeddings, "group_ids": group_ids}, labels)
    assert loss.item() == pytest.approx(reference(embeddings, labels, groups), rel=1e-9)


def test_temporal_queue_adds_past_embeddings_and_masks_same_products(monkeypatch):
    loss_fn = make_loss(monkeypatch, queue_size=6)
    first, labels = batch([1, 1], seed=1)
    ids_first = torch.arange(100, 100 + len(first))
    loss_fn({"last_hidden_state": first, "group_ids": ids_first}, labels)
    queued_rows = [1, 2, 4, 5]  # the product rows of the first step (positives and negatives)
    assert len(loss_fn.queue) == 4

    second, labels = batch([1, 1], seed=2)
    ids_second = torch.arange(200, 200 + len(second))
    ids_second[1] = ids_first[1]  # this step's first positive was queued last step: must be masked
    loss = loss_fn({"last_hidden_state": second, "group_ids": ids_second}, labels)
    queue = (first[queued_rows], [int(ids_first[r]) for r in queued_rows])
    expected = reference(second, labels, [int(g) for g in ids_second], queue=queue)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn.trainer.custom_metrics["train"]["moon_infonce/false_negatives_masked"].values[-1] == 1


def test_queue_max_age_drops_old_embeddings(monkeypatch):
    # the loss runs every second step (as with steps it never sees): entries two calls old are 4 steps old
    loss_fn = make_loss(monkeypatch, queue_size=4, queue_max_age=2)
    for step in (0, 2, 4, 6):
        loss_fn.trainer.state.global_step = step
        embeddings, labels = batch([0, 0], seed=step)
        loss_fn({"last_hidden_state": embeddings}, labels)
    stats = loss_fn.trainer.custom_metrics["train"]["moon_infonce/negatives_per_anchor"].values
    # in-batch: 2 products -> 1 negative; then only the previous call's 2 products are young enough (age 2)
    assert stats == [1.0, 3.0, 3.0, 3.0]
    assert loss_fn.trainer.custom_metrics["train"]["moon_infonce/queue_length"].values[-1] == 4


@pytest.mark.parametrize("mode", ["momentum", "split", "fifo"])
def test_a_queue_longer_than_its_max_age_can_fill_stops_at_the_first_step(monkeypatch, mode):
    loss_fn = make_loss(monkeypatch, queue_size=100, queue_max_age=2, queue_mode=mode)
    loss_fn.args.gradient_accumulation_steps = 3  # 2 products per call, 6 per optimizer step
    embeddings, labels = batch([0, 0])
    loss_fn.momentum_keys = embeddings
    with pytest.raises(MoonInputError) as error:
        loss_fn({"last_hidden_state": embeddings}, labels)
    message = str(error.value)
    assert "MOON_INFONCE_QUEUE_SIZE=100" in message and "MOON_INFONCE_QUEUE_MAX_AGE=2" in message
    assert "at most 12 entries" in message and ">= 17" in message


def test_queue_start_keeps_queued_negatives_out_until_the_warm_up_ends(monkeypatch):
    loss_fn = make_loss(monkeypatch, queue_size=100, queue_start=2)
    for step in range(4):
        loss_fn.trainer.state.global_step = step
        embeddings, labels = batch([0, 0], seed=step)
        loss_fn({"last_hidden_state": embeddings}, labels)
    metrics = loss_fn.trainer.custom_metrics["train"]
    # filled from step 0, used from step 2: 2 and 3 past steps of 2 products each
    assert metrics["moon_infonce/negatives_per_anchor"].values == [1.0, 1.0, 5.0, 7.0]
    assert metrics["moon_infonce/queue_length"].values == [2.0, 4.0, 6.0, 8.0]


def test_gradients_match_autograd_of_the_reference_definition():
    embeddings, labels = batch([1, 2, 0])
    layout = BatchLayout.from_labels(labels, len(embeddings))
    groups = torch.arange(len(layout.products))

    def loss_of(e):
        return infonce_with_masks(e[layout.anchors], e[layout.products], groups, layout.positive_in_products, 0.1)

    assert torch.autograd.gradcheck(loss_of, (embeddings.clone().requires_grad_(),))


def test_malformed_layout_is_a_clear_error(monkeypatch):
    embeddings, _ = batch([1])
    with pytest.raises(MoonInputError, match="does not match its labels"):
        make_loss(monkeypatch)({"last_hidden_state": embeddings}, torch.tensor([1.0, 0.0, 0.0]))


def test_bad_option_values_are_named(monkeypatch):
    with pytest.raises(MoonInputError, match="temperature must be > 0"):
        make_loss(monkeypatch, temperature=0, queue_size=0)
    with pytest.raises(MoonInputError, match=r"queue_size \(-1\).* must be >= 0"):
        make_loss(monkeypatch, queue_size=-1)


def test_a_queue_of_another_dimension_is_refused_on_resume(monkeypatch):
    loss_fn = make_loss(monkeypatch, queue_size=4)
    embeddings, labels = batch([0, 0], dim=8)
    loss_fn({"last_hidden_state": embeddings}, labels)
    wider, labels = batch([0, 0], dim=16)
    with pytest.raises(MoonInputError, match="holds 8-d embeddings but the model now makes 16-d"):
        loss_fn({"last_hidden_state": wider}, labels)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOGIT_SCALE = math.log(1 / 0.1)


def _rank_step(rank, world_size, port, embeddings, labels_per_rank, rows_per_rank, groups, weight, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        start = sum(rows_per_rank[:rank])
        w = weight.clone().requires_grad_()
        scale = torch.tensor(LOGIT_SCALE, dtype=torch.float64, requires_grad=True)  # a learned temperature
        local = F.normalize(embeddings[start : start + rows_per_rank[rank]] @ w, dim=-1)
        loss_fn = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), TrainerDouble())
        local_groups = groups[start : start + rows_per_rank[rank]]
        outputs = {"last_hidden_state": local, "group_ids": local_groups, "logit_scale": scale}
        loss = loss_fn(outputs, labels_per_rank[rank])
        loss.backward()
        grads = [w.grad.clone(), scale.grad.clone()]
        for grad in grads:
            dist.all_reduce(grad)  # what DDP / DeepSpeed do: average the ranks' gradients
            grad /= world_size
        if rank == 0:
            torch.save({"loss": loss.detach(), "grad": grads[0], "scale_grad": grads[1]}, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_with_spatial_negatives_equal_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    features = torch.randn(11, 6, dtype=torch.float64)
    weight = torch.randn(6, 5, dtype=torch.float64)
    labels_per_rank = [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 0.0, 0.0])]
    rows_per_rank = [5, 6]  # unequal halves: rank 1 holds two samples, one with two negatives
    groups = torch.arange(100, 111)
    groups[9] = groups[1]  # a hard negative on rank 1 is rank 0's first positive: masked across ranks
    out = tmp_path / "rank0.pt"
    spawn_args = (2, _free_port(), features, labels_per_rank, rows_per_rank, groups, weight, str(out))
    mp.spawn(_rank_step, args=spawn_args, nprocs=2)
    distributed = torch.load(out)

    w = weight.clone().requires_grad_()
    scale = torch.tensor(LOGIT_SCALE, dtype=torch.float64, requires_grad=True)
    single = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), TrainerDouble())
    outputs = {"last_hidden_state": F.normalize(features @ w, dim=-1), "group_ids": groups, "logit_scale": scale}
    loss = single(outputs, torch.cat(labels_per_rank))
    assert single.trainer.custom_metrics["train"]["moon_infonce/false_negatives_masked"].values == [1.0]
    loss.backward()
    torch.testing.assert_close(distributed["loss"], loss.detach())
    torch.testing.assert_close(distributed["grad"], w.grad)
    torch.testing.assert_close(distributed["scale_grad"], scale.grad)  # not world-size times it


def test_a_learned_temperature_is_used_and_trained(monkeypatch):
    embeddings, labels = batch([1, 1])
    logit_scale = torch.tensor(math.log(1 / 0.2), dtype=torch.float64, requires_grad=True)
    loss = make_loss(monkeypatch)({"last_hidden_state": embeddings, "logit_scale": logit_scale}, labels)
    groups = list(range(len(embeddings)))
    assert loss.item() == pytest.approx(reference(embeddings, labels, groups, temperature=0.2), rel=1e-9)
    loss.backward()
    assert logit_scale.grad is not None and logit_scale.grad != 0


def test_evaluation_neither_reads_nor_fills_the_queue(monkeypatch):
    loss_fn = make_loss(monkeypatch, queue_size=8)
    first, labels = batch([1, 1], seed=1)
    loss_fn({"last_hidden_state": first, "group_ids": torch.arange(10, 16)}, labels)
    assert len(loss_fn.queue) == 4
    loss_fn.trainer.model.training = False
    held_out, labels = batch([1, 1], seed=2)
    ids = torch.arange(20, 26)
    loss = loss_fn({"last_hidden_state": held_out, "group_ids": ids}, labels)
    assert len(loss_fn.queue) == 4  # validation embeddings stay out of the training queue
    assert loss.item() == pytest.approx(reference(held_out, labels, ids.tolist()), rel=1e-6)  # in-batch only
    assert loss_fn.trainer.custom_metrics["eval"]["moon_infonce/negatives_per_anchor"].values == [3.0]


def test_matryoshka_dimensions_keep_ids_temperature_and_the_queue(monkeypatch):
    loss_fn = make_loss(monkeypatch, queue_size=8)
    first, labels = batch([1, 1], dim=8, seed=1)
    ids_first = torch.arange(100, 106)
    loss_fn({"last_hidden_state": first, "group_ids": ids_first}, labels, mrl_dims={8: 1.0, 4: 0.5})
    assert loss_fn.queue.candidates(0)[0].shape[1] == 8  # full vectors queued once, not once per dimension

    second, labels = batch([1, 1], dim=8, seed=2)
    ids = torch.arange(200, 206)
    ids[1] = ids_first[1]  # a queued copy of this positive's product must be masked at every dimension
    loss = loss_fn({"last_hidden_state": second, "group_ids": ids}, labels, mrl_dims={8: 1.0, 4: 0.5, 99: 1.0})
    queued_rows = [1, 2, 4, 5]
    expected = 0.0
    for dim, weight in ((8, 1.0), (4, 0.5)):
        sliced = F.normalize(second[:, :dim], dim=-1)
        past = (F.normalize(first[queued_rows, :dim], dim=-1), [int(ids_first[r]) for r in queued_rows])
        expected += weight * reference(sliced, labels, ids.tolist(), queue=past)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert len(loss_fn.queue) == 8


def test_a_resumed_queue_never_mistakes_new_rows_without_ids_for_queued_ones(monkeypatch, tmp_path):
    def run(loss_fn, steps):
        losses = []
        for step in steps:
            loss_fn.trainer.state.global_step = step
            embeddings, labels = batch([1, 1], seed=10 + step)
            losses.append(loss_fn({"last_hidden_state": embeddings}, labels).item())  # no group ids
        return losses

    uninterrupted = run(make_loss(monkeypatch, queue_size=16), range(4))
    first = make_loss(monkeypatch, queue_size=16)
    run(first, range(2))
    first.save_queue(tmp_path)
    resumed = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=str(tmp_path)), TrainerDouble(),
                              MoonInfoNCEOptions(queue_size=16, queue_mode="fifo"))  # fmt: skip
    assert run(resumed, range(2, 4)) == pytest.approx(uninterrupted[2:], rel=1e-12)
    assert resumed.trainer.custom_metrics["train"]["moon_infonce/false_negatives_masked"].values == [0.0, 0.0]
