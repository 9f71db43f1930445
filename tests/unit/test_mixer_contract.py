"""What every registered mixer promises the trainer, checked on each one alike: a mixer gets these
checks by being registered (`mixing.registry.MIXERS`).

Each is built from the trainer's own parser on a real corpus (the importance blend reads it) and
driven by synthetic step signals shaped as the step gives them: what `signals_wanted` asks for,
the target's sketch rows on the target pass's steps.
"""

from __future__ import annotations

import random

import numpy
import pytest
import torch

from megatron_acodm.arguments import build_parser
from megatron_acodm.data import load_manifest
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import GRADIENT_GRAM, LAYER_DRIFTS, LAYER_NORMS, MIXERS, TARGET_GRADIENT, StepSignals, build_mixer
from megatron_acodm.mixing.registry import own_options
from megatron_acodm.sketch import HALVES, sketch_rows
from mixer_states import assert_decides_alike, mixer_args, through_checkpoint

RUN = 120  # --train-iters: Aioli's rounds and AC-ODM's warm-up are parts of it
STEPS, SAVED_AT = 70, 37
FLOOR = 0.05
BATCH, SEQ, SKETCH_DIM = 16, 32, 8
# Besides each mixer at its defaults: the variants whose state or signals differ.
VARIANTS = {
    "odm-exp3": ("odm", ["--odm-update", "exp3"]),
    "odm-smoothed-mean": ("odm", ["--odm-update", "smoothed-mean"]),
    "acodm-target": ("acodm", ["--acodm-reward", "alignment", "--mixing-objective", "target", "--acodm-hidden", "64"]),
    "acodm-trained": ("acodm", ["--acodm-train-actor", "--acodm-hidden", "64"]),
    "acodm-bounded": ("acodm", ["--acodm-action", "bounded", "--acodm-reward", "alignment", "--acodm-train-actor", "--acodm-hidden", "64"]),
}
CASES = {**{name: (name, []) for name in MIXERS}, **VARIANTS}
# What a mixer cannot be built without, beyond every run's options.
REQUIRED = {"schedule": ["--mixing-schedule", "{schedule}"]}


@pytest.fixture
def build(preprocessed_corpus, schedule_file):
    """`build(case, *extra)`: the mixer of `case` over the test corpus, from the trainer's own parser."""

    def built(case: str, *extra: str):
        name, options = CASES[case]
        required = [word.format(schedule=schedule_file) for word in REQUIRED.get(name, [])]
        # Every run may have target sets (their held-out loss is reported whatever the mixer); some mixers read them.
        args = mixer_args("--mixer", name, "--data-path", preprocessed_corpus, "--target-data-path", preprocessed_corpus,
                          *required, *options, *extra, train_iters=RUN)
        manifest = load_manifest(preprocessed_corpus)
        tokens = [domain.tokens for domain in manifest.domains]
        return build_mixer(name, names=manifest.names, initial_weights=manifest.initial_weights(), domain_tokens=tokens, args=args)

    return built


def signals(mixer, step: int, rng: numpy.random.Generator) -> StepSignals:
    """Step `step` as the trainer would report it to `mixer` after training on its weights."""
    weights = mixer.weights()
    counts = rng.multinomial(BATCH, weights)
    tokens = counts * float(SEQ)
    losses = 6.0 - 0.01 * step + rng.normal(0.0, 0.3, len(weights))
    wanted = mixer.signals_wanted(step)
    half_gram = half_tokens = norms = drifts = None
    if GRADIENT_GRAM in wanted:
        halves = numpy.stack([(counts + 1) // 2, counts // 2], axis=1).reshape(-1) * float(SEQ)
        target = [2.0 * SEQ] * HALVES if TARGET_GRADIENT in wanted else [0.0] * HALVES
        half_tokens = numpy.concatenate([halves, target if TARGET_GRADIENT in mixer.needs else []])
        assert len(half_tokens) == sketch_rows(mixer.num_domains, TARGET_GRADIENT in mixer.needs)
        sketch = rng.standard_normal((len(half_tokens), SKETCH_DIM))
        sketch[: HALVES * mixer.num_domains] += 0.5 * sketch[-1]  # gradients that share a direction
        sketch *= (half_tokens > 0)[:, None]  # an empty half sketches nothing
        half_gram = sketch @ sketch.T
    if LAYER_NORMS in wanted:
        norms = 10.0 + 0.01 * step + rng.random(len(mixer.norm_layer_depths))
    if LAYER_DRIFTS in wanted:
        drifts = 0.01 * step * rng.random(len(mixer.norm_layer_depths))
    return StepSignals(
        step=step, domain_loss_sum=losses * tokens, domain_tokens=tokens, realised_counts=counts,
        followed_weights=weights, half_gram=half_gram, half_tokens=half_tokens, layer_weight_norms=norms,
        layer_weight_drifts=drifts,
    )


def drive(mixer, steps: range, seed: int = 0) -> None:
    rng = numpy.random.default_rng(seed)
    for step in steps:
        mixer.observe(signals(mixer, step, rng))


@pytest.mark.parametrize("case", CASES)
def test_weights_are_a_simplex_above_the_floor_at_every_step(case, build):
    mixer = build(case, "--mixing-floor", str(FLOOR))
    rng = numpy.random.default_rng(0)
    for step in range(STEPS):
        weights = mixer.weights()
        assert weights.dtype == numpy.float64 and weights.shape == (mixer.num_domains,)
        assert numpy.all(numpy.isfinite(weights)) and abs(weights.sum() - 1.0) <= 1e-12
        assert weights.min() >= FLOOR - 1e-15, (step, weights)
        mixer.observe(signals(mixer, step, rng))


@pytest.mark.parametrize("case", CASES)
def test_a_restored_state_decides_as_the_mixer_it_was_saved_from(case, build):
    original = build(case)
    drive(original, range(SAVED_AT))
    restored = build(case)
    restored.load_state_dict(through_checkpoint(original.state_dict()))
    rng = numpy.random.default_rng(1)
    assert_decides_alike(original, restored, range(SAVED_AT, STEPS), lambda step, _: signals(original, step, rng))


@pytest.mark.parametrize("case", CASES)
def test_a_state_for_other_domains_or_of_another_mixer_is_refused(case, build):
    state = through_checkpoint(build(case).state_dict())
    renamed = dict(state, names=["prose", "code", "legal"])
    with pytest.raises(UserError, match=r"the mixer state is for domains \['prose', 'code', 'legal'\]"):
        build(case).load_state_dict(renamed)
    other = "uniform" if CASES[case][0] != "uniform" else "odm"
    with pytest.raises(UserError, match="the mixer state is from "):
        build(other).load_state_dict(state)


@pytest.mark.parametrize("case", CASES)
def test_building_and_running_leaves_the_global_generators_alone(case, build):
    """Every mixer draws only from generators of its own, so two runs of one seed start from the same
    model and draw the same dropout masks whatever their mixers."""
    before = (torch.get_rng_state(), numpy.random.get_state()[1].copy(), random.getstate())
    drive(build(case), range(30))
    after = (torch.get_rng_state(), numpy.random.get_state()[1].copy(), random.getstate())
    assert torch.equal(before[0], after[0]) and numpy.array_equal(before[1], after[1]) and before[2] == after[2]


def _a_value_other_than_the_default(action) -> list[str]:
    if action.nargs == 0:  # a flag
        return []
    if action.choices:
        return [next(choice for choice in action.choices if choice != action.default)]
    if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
        return [str(action.default + 1)]
    return ["0.5"]  # a path, or depths: read by no one before the refusal


@pytest.mark.parametrize("name", MIXERS)
def test_another_mixers_options_are_refused_in_one_line(name, capsys):
    actions = {action.dest: action for action in build_parser()._actions}
    foreign = [option for other, mixer in MIXERS.items() if other != name for option in own_options(mixer)
               if option not in own_options(MIXERS[name]) and option not in MIXERS[name].reads]
    assert foreign
    for option in foreign:
        flag = actions[option].option_strings[0]
        with pytest.raises(SystemExit) as refused:
            mixer_args("--mixer", name, flag, *_a_value_other_than_the_default(actions[option]))
        lines = capsys.readouterr().err.strip().splitlines()
        assert refused.value.code == 2 and len(lines) == 1, lines
        assert f"error: {flag} is read by --mixer " in lines[0] and f"not by --mixer {name}; drop it" in lines[0], lines


# Each mixer's own options at values it refuses, and what its one error line says. Checked through the
# real entry point: refused before any process group, nothing else printed.
BAD_OPTIONS = {
    "temperature": [(["--mixing-temperature", "0"], "--mixing-temperature must be positive, got 0.0")],
    "odm": [
        (["--odm-update", "exp3", "--odm-smoothing", "0.3"], "--odm-smoothing is not read by --odm-update exp3 (a cumulative reward); drop it"),
        (["--odm-update", "smoothed-mean", "--odm-smoothing", "1.0"], "--odm-smoothing must be in [0, 1), got 1.0"),
        (["--odm-warmup-fraction", "1.0"], "--odm-warmup-fraction must be in [0, 1), got 1.0"),
    ],
    "ado": [
        (["--ado-warmup-fraction", "1.0"], "--ado-warmup-fraction must be in [0, 1), got 1.0"),
        (["--ado-fit-interval", "0"], "--ado-fit-interval must be >= 1 step, got 0"),
        (["--ado-credit-smoothing", "0.0"], "--ado-credit-smoothing must be in (0, 1], got 0.0"),
        (["--ado-credit-exponent", "-1.0"], "--ado-credit-exponent must be >= 0, got -1.0"),
        (["--ado-policy-smoothing", "1.5"], "--ado-policy-smoothing must be in [0, 1], got 1.5"),
        (["--ado-min-probability", "0.5"], "--ado-min-probability must be in [0, 1/K] = [0, 0.3333] for 3 domains, got 0.5"),
        (["--mixing-prior", "prose"], "--mixing-prior 'prose' gives ['code', 'multilingual'] no weight; every domain needs a positive prior weight"),
    ],
    "aioli": [
        (["--aioli-rounds", "0"], "--aioli-rounds (0), --aioli-sweeps (2) and --aioli-segment-steps (1) must be >= 1"),
        (["--aioli-rounds", "21"], "--aioli-rounds 21 leaves 5 steps per round of --train-iters 120, not more than a sweep's 6 "
                                     "(--aioli-sweeps x 3 domains x --aioli-segment-steps); use fewer rounds, sweeps or segment steps"),
        (["--aioli-one-hot-factor", "0.3"], "--aioli-one-hot-factor must be in (1/K, 1] = (0.3333, 1] for 3 domains, got 0.3"),
        (["--aioli-eta", "-1.0"], "--aioli-eta must be >= 0, got -1.0"),
        (["--aioli-smoothing", "1.0"], "--aioli-smoothing must be in [0, 1), got 1.0"),
        (["--mixing-objective", "legal"], "--mixing-objective 'legal': no domains ['legal'] in --data-path; give one of uniform, tokens, data-path, "
         "a blend file (BLEND.json) or domain names from ['code', 'multilingual', 'prose']"),
    ],
    "acodm": [
        (["--acodm-warmup-fraction", "2"], "--acodm-warmup-fraction must be in [0, 1], got 2.0"),
        (["--acodm-gamma", "1"], "--acodm-gamma must be in [0, 1), got 1.0"),
        (["--acodm-hidden", "0"], "--acodm-hidden and --acodm-depth must be >= 1, got 0 and 5"),
        (["--acodm-min-lr", "0.1"], "--acodm-min-lr must be in [0, --acodm-lr], got 0.1"),
        (["--acodm-lr-warmup-fraction", "2"], "--acodm-lr-warmup-fraction must be in [0, 1], got 2.0"),
        (["--acodm-noise", "-1"], "--acodm-noise must be >= 0, got -1.0"),
        (["--acodm-feature-depths", "1.0"],
         "--acodm-feature-depths [1.0]: the reference state normalises the layer norms across the layers; give two or more depths"),
        (["--mixing-score-ema", "1"], "--mixing-score-ema must be in [0, 1), got 1.0"),
        (["--mixing-objective", "target"], "--mixing-objective target needs --target-data-path: the target set whose loss the mixer lowers"),
        (["--acodm-reward", "alignment", "--mixing-objective", "target", "--target-data-path", "{corpus}", "--dga-interval", "0"],
         "--dga-interval (0) must be >= 1"),
        (["--mixing-objective", "target", "--target-data-path", "{corpus}"],
         "--acodm-reward published scores the domains against each other and reads no objective; drop --mixing-objective, or give --acodm-reward alignment"),
        (["--mixing-objective", "tokens"],
         "--acodm-reward published scores the domains against each other and reads no objective; drop --mixing-objective, or give --acodm-reward alignment"),
    ],
    "dga": [
        ([], "--mixer dga needs --target-data-path: the target set whose gradient it aligns the mixture with"),
        (["--target-data-path", "{corpus}", "--dga-ema", "0"], "--dga-ema must be in (0, 1], got 0.0 (1 keeps no average)"),
        (["--target-data-path", "{corpus}", "--dga-step-size", "-1"], "--dga-step-size must be >= 0, got -1.0"),
        (["--target-data-path", "{corpus}", "--dga-interval", "0"], "--dga-interval (0) must be >= 1"),
    ],
    "importance": [([], "--mixer importance needs --target-data-path: the target set whose examples it weighs the domains by")],
    "schedule": [([], "--mixer schedule needs --mixing-schedule FILE: the mixture at chosen steps")],
}
assert set(BAD_OPTIONS) <= set(MIXERS)


@pytest.mark.parametrize(
    "name, options, message",
    [(name, options, message) for name, cases in BAD_OPTIONS.items() for options, message in cases],
    ids=[f"{name}-{index}" for name, cases in BAD_OPTIONS.items() for index in range(len(cases))],
)
def test_a_bad_option_is_one_error_line_before_the_process_group(name, options, message, preprocessed_corpus, tokenizer_model, refused):
    argv = ["--data-path", preprocessed_corpus, "--tokenizer-model", tokenizer_model, "--train-iters", str(RUN),
            "--mixer", name, *(word.format(corpus=preprocessed_corpus) for word in options)]
    assert refused(argv) == f"error: {message}"
