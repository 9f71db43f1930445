"""What a global step feeds Megatron: per-rank micro-batches with domain ids, and per-domain loss sums."""

from __future__ import annotations

import numpy
import pytest
import torch

from megatron_acodm.data import DynamicBlender, open_corpus, parse_data_path
from megatron_acodm.training.batches import data_parallel_slice, micro_batches
from megatron_acodm.training.evaluation import part_means, part_standard_errors
from megatron_acodm.training.loss import domain_loss_func, per_domain_sums


def test_per_domain_sums_equal_a_direct_computation_on_mixed_micro_batches():
    generator = torch.Generator().manual_seed(0)
    num_domains, expected = 4, numpy.zeros((4, 6))
    total = torch.zeros(4, 6, dtype=torch.float64)
    for _ in range(5):  # micro-batches mixing the domains differently
        token_losses = torch.rand(6, 9, generator=generator) * 5
        loss_mask = (torch.rand(6, 9, generator=generator) > 0.3).float()
        domain_ids = torch.randint(0, num_domains, (6,), generator=generator)
        total += per_domain_sums(token_losses, loss_mask, domain_ids, num_domains)
        for row in range(6):
            loss = sum(float(token_losses[row, position]) for position in range(9) if loss_mask[row, position])
            tokens = float(loss_mask[row].sum())
            # loss, tokens, then the sequence's count (if it has tokens) and its moments s^2, s n, n^2
            expected[domain_ids[row]] += [loss, tokens, float(tokens > 0), loss * loss, loss * tokens, tokens * tokens]
    assert numpy.allclose(total.numpy(), expected, rtol=1e-6)


def test_loss_function_keeps_megatrons_contract():
    token_losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    loss_mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    loss, tokens, reduced = domain_loss_func(loss_mask, torch.tensor([1, 0]), 3, token_losses)
    assert float(loss) == pytest.approx(1 + 2 + 5 + 6) and int(tokens) == 4
    # domain 0: one sequence, s = 11 over n = 2 tokens; domain 1: s = 3, n = 2 (columns: s, n, count, s^2, s n, n^2)
    assert reduced["domain_sums"].tolist() == [[11.0, 2.0, 1.0, 121.0, 22.0, 4.0], [3.0, 2.0, 1.0, 9.0, 6.0, 4.0], [0.0] * 6]
    loss /= 4  # the schedule divides in place: the reported sums must not change
    assert reduced["domain_sums"][0, 0] == 11.0


def test_an_evaluations_standard_error_is_the_ratio_estimators_over_its_sequences():
    # Part 0: sequences with loss sums 2, 4, 9 over 1, 2, 3 tokens; part 1: one sequence; part 2: none.
    token_losses = torch.tensor([[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [2.0, 3.0, 4.0], [5.0, 5.0, 0.0]])
    loss_mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    sums = per_domain_sums(token_losses, loss_mask, torch.tensor([0, 0, 0, 1]), 3).numpy()
    # mean r = 15 / 6 = 2.5; residuals s - r n: -0.5, -1, 1.5, squares 3.5 in all;
    # variance 3 / (3 - 1) * 3.5 / 6^2 = 0.1458333...
    assert part_means(sums) == [2.5, 5.0, None]
    errors = part_standard_errors(sums)
    assert errors[0] == pytest.approx((1.5 * 3.5 / 36) ** 0.5, rel=1e-12) and errors[1:] == [None, None]


def test_data_parallel_slices_partition_the_global_batch():
    domain_ids, sample_ids = numpy.arange(12) % 3, numpy.arange(12) * 10
    slices = [data_parallel_slice(domain_ids, sample_ids, rank=rank, size=3) for rank in range(3)]
    assert numpy.concatenate([ids for _, ids in slices]).tolist() == sample_ids.tolist()
    assert all(len(ids) == 4 for _, ids in slices)


def test_micro_batches_tag_every_sequence_with_its_domain(preprocessed_corpus, tokenizer):
    blender = DynamicBlender(open_corpus(parse_data_path([preprocessed_corpus]), tokenizer), seq_length=16, global_batch_size=8, seed=7, split="90,10,0")
    plan = blender.plan(0, [0.25, 0.25, 0.5])
    batches = micro_batches(blender.sample, plan.domain_ids, plan.sample_ids, 4)
    assert len(batches) == 2 and batches[0]["tokens"].shape == (4, 16)
    assert torch.cat([batch["domain_ids"] for batch in batches]).tolist() == plan.domain_ids.tolist()
    for row, (domain, sample) in enumerate(zip(plan.domain_ids[:4], plan.sample_ids[:4])):
        assert torch.equal(batches[0]["tokens"][row], blender.sample(int(domain), int(sample))["tokens"])
    padding = micro_batches(blender.valid_sample, numpy.array([0, 1]), [0, None], 2)[0]
    assert padding["loss_mask"][1].sum() == 0 and padding["loss_mask"][0].sum() > 0


@pytest.mark.parametrize("create_attention_mask", [False, True])
def test_micro_batches_carry_an_explicit_mask_only_when_asked(preprocessed_corpus, tokenizer, create_attention_mask):
    # The trainer asks only with --reset-attention-mask: for plain causal attention the kernel masks itself,
    # and a [1, seq, seq] mask per sample costs the host (bench/attention_mask.py).
    blender = DynamicBlender(open_corpus(parse_data_path([preprocessed_corpus]), tokenizer), seq_length=16, global_batch_size=8, seed=7,
                             split="90,10,0", create_attention_mask=create_attention_mask)
    plan = blender.plan(0, [0.25, 0.25, 0.5])
    (batch,) = micro_batches(blender.sample, plan.domain_ids[:4], plan.sample_ids[:4], 4)
    assert ("attention_mask" in batch) == create_attention_mask
    if create_attention_mask:
        assert batch["attention_mask"].shape == (4, 1, 16, 16)
