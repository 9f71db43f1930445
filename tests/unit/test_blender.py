"""DynamicBlender: tracking, determinism, exact restore, epoch wrap and clear errors on bad input."""

from __future__ import annotations

import json
import os

import numpy
import pytest
import torch

from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_acodm.data import DynamicBlender, Manifest, load_manifest, open_corpus, parse_data_path
from megatron_acodm.data.manifest import Domain
from megatron_acodm.errors import UserError

SEQ = 16
BATCH = 12


def _write_domain(folder, name, documents, dtype=numpy.uint16):
    prefix = os.path.join(folder, f"{name}_text_document")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for document in documents:
        builder.add_document(numpy.asarray(document), [len(document)])
    builder.finalize(prefix + ".idx")
    return prefix


def _documents(seed, count, vocab, length=(20, 60)):
    rng = numpy.random.default_rng(seed)
    return [rng.integers(4, vocab, int(rng.integers(*length))).tolist() for _ in range(count)]


@pytest.fixture
def corpus(tmp_path, tokenizer):
    """A manifest over three synthetic domains of different sizes (the smallest wraps epochs fast)."""
    sizes = {"alpha": 120, "beta": 60, "gamma": 12}
    domains = [
        Domain(name=name, prefix=_write_domain(str(tmp_path), name, _documents(index, count, tokenizer.vocab_size)))
        for index, (name, count) in enumerate(sizes.items())
    ]
    path = str(tmp_path / "domains.json")
    Manifest(domains=domains, tokenizer=tokenizer.identity.to_json()).save(path)
    return path


def _blender(manifest_path, tokenizer, **overrides):
    options = dict(seq_length=SEQ, global_batch_size=BATCH, seed=7, split="90,10,0", data_cache_path=None)
    options.update(overrides)
    return DynamicBlender(open_corpus(load_manifest(manifest_path), tokenizer), **options)


def _weights(step):
    rng = numpy.random.default_rng(1000 + step)
    weights = rng.dirichlet(numpy.ones(3))
    if step % 7 == 3:
        weights = numpy.array([0.0, 0.0, 1.0])  # abrupt, and two weights vanish
    return weights


def test_plan_tracks_cumulative_weights(corpus, tokenizer):
    blender = _blender(corpus, tokenizer)
    target = numpy.zeros(3)
    for step in range(150):
        weights = _weights(step)
        plan = blender.plan(step, weights)
        target += weights * BATCH
        assert len(plan.domain_ids) == BATCH
        assert numpy.array_equal(numpy.bincount(plan.domain_ids, minlength=3), plan.counts)
        assert numpy.abs(blender.realised_counts - target).max() < 1.0


def test_minimum_per_domain_reaches_every_domain_every_step_and_the_rest_tracks_the_weights(corpus, tokenizer):
    minimum = 2
    blender = _blender(corpus, tokenizer, min_samples_per_domain=minimum)
    target = numpy.zeros(3)
    for step in range(150):
        weights = _weights(step)  # some steps give two domains weight zero
        plan = blender.plan(step, weights)
        assert plan.counts.min() >= minimum and plan.counts.sum() == BATCH
        assert numpy.allclose(plan.weights, (minimum + weights * (BATCH - 3 * minimum)) / BATCH, rtol=0, atol=1e-15)
        target += plan.weights * BATCH
        assert numpy.abs(blender.realised_counts - target).max() < 1.0  # the same bound, for the mixture followed


def test_without_a_minimum_the_plan_follows_the_weights_exactly(corpus, tokenizer):
    blender = _blender(corpus, tokenizer)
    weights = numpy.array([0.2, 0.3, 0.5])
    assert numpy.array_equal(blender.plan(0, weights).weights, weights)


@pytest.mark.parametrize("minimum", [-1, 5])
def test_a_minimum_the_batch_cannot_hold_is_refused(corpus, tokenizer, minimum):
    with pytest.raises(UserError, match=rf"--min-samples-per-domain {minimum}: the 3 domains of --data-path and the "
                                        rf"global batch of {BATCH} allow a value in \[0, 4\]"):
        _blender(corpus, tokenizer, min_samples_per_domain=minimum)


def test_same_seed_same_plans_other_seed_other_plans(corpus, tokenizer):
    first, second, other = (_blender(corpus, tokenizer, seed=seed) for seed in (7, 7, 8))
    differs = False
    for step in range(20):
        a, b, c = (blender.plan(step, _weights(step)) for blender in (first, second, other))
        assert numpy.array_equal(a.domain_ids, b.domain_ids) and numpy.array_equal(a.sample_ids, b.sample_ids)
        differs |= not numpy.array_equal(a.sample_ids, c.sample_ids)
    assert differs


def test_restored_blender_plans_exactly_what_the_original_would(corpus, tokenizer):
    original = _blender(corpus, tokenizer)
    for step in range(33):
        original.plan(step, _weights(step))
    state = json.loads(json.dumps(original.state_dict()))  # survives a text round trip
    restored = _blender(corpus, tokenizer)
    restored.load_state_dict(state)
    for step in range(33, 80):
        a, b = original.plan(step, _weights(step)), restored.plan(step, _weights(step))
        assert numpy.array_equal(a.domain_ids, b.domain_ids)
        assert numpy.array_equal(a.sample_ids, b.sample_ids)


def test_epochs_visit_every_sample_once_then_reshuffle(corpus, tokenizer):
    blender = _blender(corpus, tokenizer, global_batch_size=1)  # one sample a step: draws in walk order
    size = len(blender.train_datasets[2])
    drawn = [int(blender.plan(step, [0.0, 0.0, 1.0]).sample_ids[0]) for step in range(3 * size)]
    epochs = [drawn[i * size : (i + 1) * size] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(size))
    assert epochs[0] != epochs[1] != epochs[2]


def test_samples_are_megatron_gpt_samples_tagged_with_their_domain(corpus, tokenizer):
    blender = _blender(corpus, tokenizer)
    plan = blender.plan(0, [0.2, 0.3, 0.5])
    sample = blender.sample(int(plan.domain_ids[0]), int(plan.sample_ids[0]))
    assert sample["domain_id"] == plan.domain_ids[0]
    assert sample["tokens"].shape == (SEQ,) and sample["labels"].shape == (SEQ,)
    assert torch.equal(sample["tokens"][1:], sample["labels"][:-1])
    assert int(sample["tokens"].max()) < tokenizer.vocab_size


def test_validation_documents_are_held_out(corpus, tokenizer):
    blender = _blender(corpus, tokenizer)
    for domain in range(3):
        train, valid = blender.train_datasets[domain], blender.valid_datasets[domain]
        assert valid is not None and len(valid) > 0
        assert set(train.indices.tolist()).isdisjoint(valid.indices.tolist())


def test_initial_weights_from_megatron_data_path(corpus, tokenizer):
    folder = os.path.dirname(corpus)
    manifest = parse_data_path(["0.2", f"{folder}/alpha_text_document", "0.8", f"{folder}/gamma_text_document"])
    assert manifest.names == ["alpha", "gamma"]
    blender = DynamicBlender(open_corpus(manifest, tokenizer), seq_length=SEQ, global_batch_size=10, seed=7)
    assert numpy.allclose(blender.initial_weights, [0.2, 0.8])


@pytest.mark.parametrize(
    "data_path, message",
    [
        (["-0.2", "a", "1.2", "b"], "weight -0.2 is negative"),
        (["nan", "a", "1", "b"], "not a finite number"),
        (["0", "a", "0", "b"], "all weights are zero"),
        (["0.5", "a", "half", "b"], "'half' does not parse as a number"),
        (["abc", "pfxA", "1", "pfxB"], r"--data-path: weight 'abc' does not parse as a number; give `weight prefix` pairs"),
        (["a", "0.5"], "'0.5' looks like a weight"),
        (["a", "b", "0.5"], "'0.5' looks like a weight"),
        (["0.5", "x/books", "0.5", "y/books"], "'books' appears twice"),
    ],
)
def test_bad_data_path_is_refused_clearly(data_path, message):
    with pytest.raises(UserError, match=message):
        parse_data_path(data_path)


def test_bad_weights_at_plan_time_are_refused(corpus, tokenizer):
    blender = _blender(corpus, tokenizer)
    with pytest.raises(UserError, match="not a finite number"):
        blender.plan(0, [float("nan"), 0.5, 0.5])
    with pytest.raises(ValueError, match="expected 3 weights"):
        blender.plan(0, [0.5, 0.5])
    with pytest.raises(ValueError, match="expected step 0"):
        blender.plan(1, [0.2, 0.3, 0.5])


def _corrupt(corpus, domain, action):
    prefix = os.path.join(os.path.dirname(corpus), f"{domain}_text_document")
    action(prefix)
    return prefix


@pytest.mark.parametrize(
    "action, message",
    [
        (lambda p: os.remove(p + ".idx"), r"beta_text_document\.idx: missing; rebuild it with tools/preprocess_domains.py"),
        (lambda p: open(p + ".idx", "r+b").write(b"GARBAGE!!"), r"beta_text_document\.idx: not a Megatron indexed dataset"),
        (lambda p: os.truncate(p + ".idx", 100), r"beta_text_document\.idx: truncated"),
        (lambda p: os.truncate(p + ".bin", os.path.getsize(p + ".bin") - 2), r"beta_text_document\.bin: \d+ bytes but its index"),
    ],
)
def test_corrupt_files_are_named(corpus, tokenizer, action, message):
    _corrupt(corpus, "beta", action)
    with pytest.raises(UserError, match=message):
        _blender(corpus, tokenizer)


def test_token_ids_beyond_vocabulary_are_refused(tmp_path, tokenizer):
    prefix = _write_domain(str(tmp_path), "wide", [[5, 6, tokenizer.vocab_size + 3]] * 40)
    manifest = parse_data_path([prefix])
    with pytest.raises(UserError, match=rf"wide_text_document\.bin: token id {tokenizer.vocab_size + 3} is beyond"):
        DynamicBlender(open_corpus(manifest, tokenizer), seq_length=SEQ, global_batch_size=4, seed=7)


def test_empty_and_too_short_domains_are_refused(tmp_path, tokenizer):
    empty = _write_domain(str(tmp_path), "empty", [])
    with pytest.raises(UserError, match="holds no documents"):
        DynamicBlender(open_corpus(parse_data_path([empty]), tokenizer), seq_length=SEQ, global_batch_size=4, seed=7)
    short = _write_domain(str(tmp_path), "short", [[5, 6, 7]] * 3)
    with pytest.raises(UserError, match="'short' has no training sample of 17 tokens"):
        DynamicBlender(open_corpus(parse_data_path([short]), tokenizer), seq_length=SEQ, global_batch_size=4, seed=7)


def test_manifest_from_another_tokenizer_is_refused(corpus, tokenizer):
    with open(corpus) as stream:
        document = json.load(stream)
    document["tokenizer"]["model_sha256"] = "0" * 64
    with open(corpus, "w") as stream:
        json.dump(document, stream)
    with pytest.raises(UserError, match="pass the tokenizer the corpus was made with"):
        _blender(corpus, tokenizer)


def test_state_of_other_domains_is_refused(corpus, tokenizer, tmp_path):
    blender = _blender(corpus, tokenizer)
    state = blender.state_dict()
    state["domains"] = ["alpha", "beta", "delta"]
    with pytest.raises(ValueError, match="resume with the same --data-path"):
        _blender(corpus, tokenizer).load_state_dict(state)


def test_unreadable_manifest_names_the_file(tmp_path):
    path = tmp_path / "domains.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match=r"domains\.json: not valid JSON"):
        load_manifest(str(path))
    with pytest.raises(UserError, match=r"--data-path .*missing.json: no such file; create it with tools/preprocess_domains.py"):
        load_manifest(str(tmp_path / "missing.json"))


def test_weights_near_the_float_maximum_normalise_without_overflow():
    assert parse_data_path(["1e308", "a", "1e308", "b"]).initial_weights() == [0.5, 0.5]
    assert parse_data_path(["1.7e308", "a", "0", "b", "1.7e308", "c"]).initial_weights() == [0.5, 0.0, 0.5]


def test_folder_as_data_path_points_to_its_manifest(corpus, tmp_path):
    folder = os.path.dirname(corpus)
    with pytest.raises(UserError) as caught:
        parse_data_path([folder])
    assert str(caught.value) == (
        f"--data-path {folder}: is a folder; pass the domains.json that tools/preprocess_domains.py wrote there: "
        f"--data-path {corpus}"
    )
    (tmp_path / "jsonl").mkdir()
    with pytest.raises(UserError) as caught:
        parse_data_path(["0.5", str(tmp_path / "jsonl"), "0.5", f"{folder}/alpha_text_document"])
    assert str(caught.value) == (
        f"--data-path {tmp_path / 'jsonl'}: is a folder, not a domains.json or a .bin/.idx prefix; pass the "
        f"domains.json that tools/preprocess_domains.py writes (run it on the domains' JSONL first)"
    )


@pytest.mark.parametrize("data_path", [["books.jsonl"], ["web.jsonl.gz"], ["0.5", "a_text_document", "0.5", "web.jsonl.zst"]])
def test_raw_jsonl_as_data_path_says_to_preprocess_first(data_path):
    with pytest.raises(UserError) as caught:
        parse_data_path(data_path)
    raw = data_path[-1]
    assert str(caught.value) == (
        f"--data-path {raw}: is raw JSONL, not a Megatron .bin/.idx dataset; index it first with "
        f"tools/preprocess_domains.py (e.g. --domain NAME={raw} --output-dir OUT), then pass --data-path OUT/domains.json"
    )


@pytest.mark.parametrize(
    "field, value, label, expected",
    [
        ("tokens", "many", "'web'", "a whole number >= 0"),
        ("documents", -3, "'web'", "a whole number >= 0"),
        ("max_token_id", True, "'web'", "a whole number >= 0"),
        ("weight", "x", "'web'", "a number"),
        ("inputs_sha256", 7, "'web'", "a non-empty string"),
        ("prefix", None, "'web'", "a non-empty string"),
        ("name", 5, "#2", "a non-empty string"),
    ],
)
def test_mistyped_manifest_field_is_named(tmp_path, field, value, label, expected):
    entries = [{"name": "ok", "prefix": "ok_text_document"}, {"name": "web", "prefix": "web_text_document", field: value}]
    path = tmp_path / "domains.json"
    path.write_text(json.dumps({"version": 1, "tokenizer": None, "domains": entries}))
    with pytest.raises(UserError) as caught:
        parse_data_path([str(path)])
    assert str(caught.value) == (
        f"{path}: domain {label}: field '{field}' is {json.dumps(value)}, expected {expected}; "
        f"correct the field, or delete the manifest and rerun tools/preprocess_domains.py to regenerate it"
    )


def test_mistyped_manifest_tokenizer_is_named(tmp_path):
    path = tmp_path / "domains.json"
    path.write_text(json.dumps({"version": 1, "tokenizer": "spm", "domains": [{"name": "a", "prefix": "a"}]}))
    message = r"domains\.json: field 'tokenizer' is \"spm\", expected an object .* or null; correct it, or delete the manifest"
    with pytest.raises(UserError, match=message):
        load_manifest(str(path))
