"""The training loop: ask the mixer, plan the batch, run the step, let the mixer observe; log,
evaluate and checkpoint at their intervals; resume exactly from the latest checkpoint."""

from __future__ import annotations

import time
from argparse import Namespace

import numpy
import torch

from megatron.core import parallel_state

from megatron_acodm.data import StepPlan
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import GRADIENT_GRAM, LAYER_DRIFTS, LAYER_NORMS, TARGET_GRADIENT, StepSignals, build_mixer
from megatron_acodm.model import layers_at_depths
from megatron_acodm.sketch import GradientSketcher, gram, half_segments, sketch_rows
from megatron_acodm.training.batches import rank_micro_batches
from megatron_acodm.training.checkpoint import (
    TRACKER, initialize_from_pretrained, load_checkpoint, open_checkpoint, save_checkpoint, saved_run_start_layers,
)
from megatron_acodm.training.evaluation import domain_evaluation_sizes, evaluate, evaluation_batches, part_means, part_standard_errors
from megatron_acodm.training.exit_signal import ExitSignalHandler
from megatron_acodm.training.inputs import build_blender, build_targets, check_output_paths, open_inputs
from megatron_acodm.metrics import EvalRecord, TrainRecord, run_logger
from megatron_acodm.metrics.memory import cuda_memory_mib
from megatron_acodm.training.loss import COLUMNS, LOSS, TOKENS
from megatron_acodm.training.resume import check_resumable, check_same_model_shape, restore, run_state
from megatron_acodm.training.setup import build_model, build_optimizer, device, initialize
from megatron_acodm.training.signals import WeightDrift
from megatron_acodm.training.step import StepOutcome, run_step
from megatron_acodm.training.target_pass import check_target_pass_supported, steering_batch_size, target_micro_batches


def _start_from_pretrained(args: Namespace, model, optimizer, log) -> None:
    """The model's weights from --pretrained-checkpoint, after checking that they fit the model."""
    pretrained = open_checkpoint(args.pretrained_checkpoint)
    if pretrained is None:
        raise UserError(
            f"--pretrained-checkpoint {args.pretrained_checkpoint}: no checkpoint there (no latest_checkpointed_iteration.txt); "
            f"give the --save folder of a pretrain_acodm.py run"
        )
    path, state = pretrained
    check_same_model_shape(path, state["args"], args)
    initialize_from_pretrained(path, model, optimizer)
    log(f"initialised the model from {path} (--pretrained-checkpoint, iteration {state['iteration']}); this run starts at iteration 0")


class _Interval:
    """What the steps since the last log line add up to."""

    def __init__(self, num_domains: int):
        self.num_domains = num_domains
        self.reset()

    def reset(self) -> None:
        self.steps, self.seconds = 0, 0.0
        self.sums = numpy.zeros((self.num_domains, COLUMNS))
        self.counts = numpy.zeros(self.num_domains)

    def add(self, outcome: StepOutcome, counts: numpy.ndarray, seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds
        self.sums += outcome.domain_sums
        self.counts += counts

    def record(self, done: int, args: Namespace, elapsed: float, lr: float, grad_norm, weights, mixer, memory: dict) -> TrainRecord:
        tokens = float(self.sums[:, TOKENS].sum())
        return TrainRecord(
            iteration=done,
            train_iters=args.train_iters,
            consumed_samples=done * args.global_batch_size,
            elapsed_s=elapsed,
            iteration_ms=1000.0 * self.seconds / self.steps,
            lr=lr,
            lm_loss=float(self.sums[:, LOSS].sum() / max(tokens, 1.0)),
            grad_norm=grad_norm,
            tokens_per_s=tokens / max(self.seconds, 1e-9),
            global_batch_size=args.global_batch_size,
            domain_loss=part_means(self.sums),
            domain_weight=[float(weight) for weight in weights],
            domain_share=(self.counts / self.counts.sum()).tolist(),
            domain_diagnostics={key: values.tolist() for key, values in mixer.domain_diagnostics().items()},
            mixer_diagnostics=mixer.scalar_diagnostics(),
            **memory,
        )


def _signals(iteration: int, outcome: StepOutcome, plan: StepPlan) -> StepSignals:
    return StepSignals(
        step=iteration,
        domain_loss_sum=outcome.domain_sums[:, LOSS],
        domain_tokens=outcome.domain_sums[:, TOKENS],
        realised_counts=plan.counts,
        followed_weights=plan.weights,
        half_gram=None if outcome.sketch is None else gram(outcome.sketch).double().cpu().numpy(),
        half_tokens=outcome.segment_tokens,
        layer_weight_norms=outcome.layer_norms,
        layer_weight_drifts=outcome.layer_drifts,
    )


def _evaluation(args: Namespace, model, blender, targets, data_parallel: tuple[int, int], run_device):
    """The held-out evaluation as a function of the iteration it is logged at (an EvalRecord), or
    None when neither the domains nor the target sets hold anything out."""
    domain_batches = evaluation_batches(domain_evaluation_sizes(blender, args.eval_iters, args.global_batch_size), args.global_batch_size)
    target_batches = evaluation_batches(targets.held_out_sizes(), args.global_batch_size) if targets is not None else []
    if not domain_batches and not target_batches:
        return None

    def record(iteration: int) -> EvalRecord:
        sums = evaluate(model, blender.valid_sample, blender.num_domains, domain_batches, args.micro_batch_size, *data_parallel, run_device)
        target_loss = target_loss_se = None
        if target_batches:
            target_sums = evaluate(model, targets.held_out_sample, len(targets.sets), target_batches, args.micro_batch_size, *data_parallel, run_device)
            target_loss = dict(zip(targets.names, part_means(target_sums)))
            target_loss_se = dict(zip(targets.names, part_standard_errors(target_sums)))
        return EvalRecord(iteration=iteration, domain_loss=part_means(sums), domain_loss_se=part_standard_errors(sums),
                          domain_tokens=blender.domain_tokens.tolist(), target_loss=target_loss, target_loss_se=target_loss_se)

    return record


def pretrain(args: Namespace) -> None:
    # Every input is checked before the process group exists (training.inputs), the mixer's
    # options included; the mixer is built before the seeds are set, so it cannot move them.
    inputs = open_inputs(args)
    mixer = build_mixer(args.mixer, names=inputs.corpus.names, initial_weights=inputs.corpus.initial_weights, domain_tokens=inputs.corpus.tokens, args=args)
    check_output_paths(args)
    initialize(args)
    rank = torch.distributed.get_rank()
    log = (lambda message: print(message, flush=True)) if rank == 0 else (lambda message: None)
    run_device = device()
    blender = build_blender(args, inputs.corpus)
    targets = build_targets(args, inputs.targets, blender)
    model = build_model(args)
    optimizer, scheduler = build_optimizer(args, model)
    # Only a mixer that reads the drifts has W_0 kept (and checkpointed).
    drift = WeightDrift(layers_at_depths(mixer.norm_layer_depths, args.num_layers)) if LAYER_DRIFTS in mixer.needs else None

    start = 0
    checkpoint = open_checkpoint(args.load) if args.load else None
    if checkpoint is not None:
        path, state = checkpoint
        check_resumable(path, state, args, scheduler, blender)
        load_checkpoint(path, state, model, optimizer, args.use_distributed_optimizer, drift)
        start = restore(state, args, scheduler, mixer, blender, log)
        log(f"resumed from {path} at iteration {start}")
        unsaved = [] if drift is None else sorted(set(drift.layer_indices) - set(saved_run_start_layers(state)))
        if unsaved:
            log(f"{path} holds no starting weights of layers {unsaved} (its run's mixer read no layer drifts): "
                f"their drifts are measured from the weights of iteration {start}")
    elif args.load:
        log(f"--load {args.load}: no checkpoint there (no {TRACKER}); training from iteration 0")
    if checkpoint is None and args.pretrained_checkpoint:
        _start_from_pretrained(args, model, optimizer, log)
    mixer.resume_at(start, log)
    data_parallel = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    evaluation = _evaluation(args, model, blender, targets, data_parallel, run_device)
    if args.skip_train:
        _evaluate_only(args, blender, evaluation, start, checkpoint is not None, log)
        return
    if start >= args.train_iters:
        log(f"nothing to do: the checkpoint is at iteration {start}, --train-iters is {args.train_iters}")
        _end_of_run(mixer, rank, log)
        return

    logger = run_logger(args, blender.names)
    logger.log_run(vars(args), start_iteration=start)
    dp_rank, dp_size = data_parallel
    # Only what the mixer reads is built: no sketch hooks, no norms, no target pass for the baselines.
    reads_target = TARGET_GRADIENT in mixer.needs
    if reads_target:
        check_target_pass_supported(model[0].config, args.pipeline_model_parallel_size, f"--mixer {args.mixer} with a target set")
        steering_size = steering_batch_size(targets, args.global_batch_size, dp_size)
    sketcher = None
    if GRADIENT_GRAM in mixer.needs:
        rows = sketch_rows(blender.num_domains, with_target=reads_target)
        sketcher = GradientSketcher(model, rows, layers=args.sketch_layers, dim=args.sketch_dim, seed=args.seed)
    norm_layers = layers_at_depths(mixer.norm_layer_depths, args.num_layers) if LAYER_NORMS in mixer.needs else None
    if drift is not None:
        # W_0 is what this run's first step finds, even for a mixer that wants the drifts of later
        # steps only; the layers whose W_0 a resumed checkpoint held keep theirs.
        drift.take_start(model)
    interval = _Interval(blender.num_domains)
    exit_signals = ExitSignalHandler(run_device) if args.exit_signal_handler else None
    run_started = time.perf_counter()
    for iteration in range(start, args.train_iters):
        step_started = time.perf_counter()
        plan = blender.plan(iteration, mixer.weights())
        wanted = mixer.signals_wanted(iteration)
        sketching = GRADIENT_GRAM in wanted
        if sketcher is not None:
            sketcher.active = sketching
        batch = rank_micro_batches(
            blender.sample, plan.domain_ids, plan.sample_ids, args.micro_batch_size, rank=dp_rank, size=dp_size,
            sketch_segments=half_segments(plan.domain_ids) if sketching else None,
        )
        target_batches = None
        if TARGET_GRADIENT in wanted:
            target_batches = target_micro_batches(
                targets, iteration // mixer.target_interval, steering_size, blender.num_domains, dp_rank, dp_size, args.micro_batch_size
            )
        outcome = run_step(
            model, batch, blender.num_domains, run_device, optimizer, scheduler,
            sketcher if sketching else None, norm_layers if LAYER_NORMS in wanted else None,
            drift if LAYER_DRIFTS in wanted else None, target_batches,
        )
        mixer.observe(_signals(iteration, outcome, plan))
        interval.add(outcome, plan.counts, time.perf_counter() - step_started)
        done = iteration + 1
        logger.advance(1)
        if done % args.log_interval == 0 or done == args.train_iters:
            lr = scheduler.get_lr(optimizer.param_groups[0])
            memory = cuda_memory_mib(run_device)
            logger.log_train(interval.record(done, args, time.perf_counter() - run_started, lr, outcome.grad_norm, plan.weights, mixer, memory))
            interval.reset()
        if evaluation is not None and (done % args.eval_interval == 0 or done == args.train_iters):
            logger.log_eval(evaluation(done))
        signalled = exit_signals is not None and exit_signals.any_rank_received()
        exiting = signalled or (args.exit_interval is not None and done % args.exit_interval == 0)
        if args.save and ((args.save_interval and done % args.save_interval == 0) or exiting or done == args.train_iters):
            path = save_checkpoint(
                args.save, done, model, optimizer, run_state(done, args, scheduler, mixer, blender), args.use_distributed_optimizer, drift
            )
            log(f"saved checkpoint {path}")
        if exiting:
            reason = "a signal to exit (--exit-signal-handler)" if signalled else f"--exit-interval {args.exit_interval}"
            log(f"exiting at iteration {done} on {reason}")
            break
    if exit_signals is not None:
        exit_signals.release()
    _end_of_run(mixer, rank, log)
    logger.close()


def _evaluate_only(args: Namespace, blender, evaluation, iteration: int, loaded: bool, log) -> None:
    """--skip-train: one evaluation of the model as loaded, logged at its iteration."""
    if evaluation is None:
        raise UserError("--skip-train: the corpus holds no validation sample; give a --split with a validation share")
    log(f"--skip-train: evaluating the model {'at iteration ' + str(iteration) if loaded else 'as initialised (no checkpoint loaded)'}")
    logger = run_logger(args, blender.names)
    logger.log_run(vars(args), start_iteration=iteration)
    logger.log_eval(evaluation(iteration))
    logger.close()


def _end_of_run(mixer, rank: int, log) -> None:
    """What the mixer leaves behind (e.g. AC-ODM's exported policy), written once, then every rank leaves together."""
    if rank == 0:
        mixer.end_of_run(log)
    torch.distributed.barrier()
