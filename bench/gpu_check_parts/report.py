"""The check's report: OUT_DIR/gpu_check.json, saved after every part (a run cut short keeps what it
finished), and its markdown summary OUT_DIR/gpu_check.md."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .profiles import BUDGET_S

SUMMARY = "gpu_check.md"
REPORT = "gpu_check.json"


def host_share(report: dict) -> dict:
    """Host batch building over the static step time, per model: the loop builds each step's batch
    once the mixer has decided its weights, so this share is in every step's time."""
    batches = report["parts"].get("host_batch", {}).get("models", {})
    summary = report["parts"].get("training", {}).get("summary", {})
    shares = {}
    for name, batch in batches.items():
        static = summary.get(name, {}).get("mixers", {}).get("static", {})
        if static.get("ok"):
            shares[name] = batch["batch_ms"] / static["median_step_ms"]
    return shares


def number(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    parts = report["parts"]
    lines = [f"# GPU check ({report['mode']}): {'PASSED' if report['ok'] else 'FAILED' if report['done'] else 'RUNNING'}", ""]
    facts = parts.get("versions", {})
    keys = ("device_name", "torch", "cuda", "triton", "megatron-core", "python", "layer_spec")
    lines += [", ".join(f"{key} {facts.get(key)}" for key in keys), ""]
    lines += [f"- {name}: {'ok' if part.get('ok') else 'FAILED: ' + part.get('error', 'see the JSON')} ({part['seconds']:.1f} s)"
              for name, part in parts.items()]
    lines += ["", f"Total {report['duration_s']:.0f} s (budget {BUDGET_S} s on one GPU)."]
    lines += kernel_lines(parts) + training_lines(parts, report["host_share_of_step"]) + ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list]) -> list[str]:
    body = ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *body]


def kernel_lines(parts: dict) -> list[str]:
    lines = []
    correctness, speed = parts.get("kernel_correctness", {}), parts.get("kernel_speed", {})
    if "cases" in correctness:
        lines += table(["kernel case", "operation", "dtype", "rel. difference", "tolerance", "ok"], [
            [c["case"], c["operation"], c["dtype"], f"{c['relative_difference']:.1e}", f"{c['tolerance']:.0e}", c["ok"]]
            for c in correctness["cases"]
        ])
    if "results" in speed:
        lines += table(["implementation", "operation", "tokens", "median ms", "TFLOP/s", "GB/s", "of roofline"], [
            [r["implementation"], r["operation"], r["tokens"], f"{r['median_ms']:.3f}", number(r.get("achieved_TFLOP_per_s"), ".1f"),
             number(r.get("achieved_GB_per_s"), ".0f"), number(r.get("fraction_of_roofline"), ".0%")]
            for r in speed["results"]
        ])
        lines += [f"- {v['operation']} at {v['tokens']} tokens: {v['faster']} is faster, x{v['speedup']:.2f}" for v in speed["faster"]]
    return lines


def training_lines(parts: dict, host_shares: dict) -> list[str]:
    lines = []
    for name, model in parts.get("training", {}).get("summary", {}).items():
        shape = model["model"]
        size = f"{shape['num_layers']} x {shape['hidden_size']}, seq {shape['seq_length']}, global batch {shape['global_batch']}"
        lines += ["", f"**{name}** ({size})"]
        lines += table(["mixer", "median step ms", "x static", "peak memory MiB", "x static"], [
            [mixer, number(cell.get("median_step_ms"), ".1f"), number(cell.get("step_ratio"), ".3f"),
             number(cell.get("peak_memory_mib"), ".0f"), number(cell.get("peak_memory_ratio"), ".3f")]
            if cell["ok"] else [mixer, "FAILED", "", "", ""]
            for mixer, cell in model["mixers"].items()
        ])
        sources = sorted({cell["peak_memory_source"] for cell in model["mixers"].values() if cell["ok"]})
        lines += [f"\npeak memory: {', '.join(sources)}"] if sources else []
        throughput = model.get("static_throughput")
        if throughput:
            mfu = number(throughput["mfu"], ".1%") or "n/a"
            lines.append(f"\nstatic: {throughput['tokens_per_s']:,.0f} tokens/s, {throughput['achieved_TFLOP_per_s']:.1f} TFLOP/s, "
                         f"MFU {mfu}; the sketches' FLOPs: {throughput['sketch_flop_share']:.2%} of a step")
        if name in host_shares:
            batch_ms = parts["host_batch"]["models"][name]["batch_ms"]
            lines.append(f"host batch building: {batch_ms:.1f} ms, {host_shares[name]:.1%} of the static step")
    return lines


@dataclass
class Check:
    """The report of one check, saved after every part."""

    output_dir: str
    report: dict
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def save(self) -> None:
        from common import write_json, write_text

        self.report.update(duration_s=self.elapsed(), host_share_of_step=host_share(self.report))
        write_json(os.path.join(self.output_dir, REPORT), self.report)
        write_text(os.path.join(self.output_dir, SUMMARY), markdown(self.report))

    def run_part(self, name: str, function: Callable[[], dict]) -> dict:
        """Run one part, time it and save the report; a failure is recorded and the next part runs."""
        from common import say

        say(f"[{self.elapsed():6.1f} s] {name} ...")
        started = time.perf_counter()
        try:
            result = function()
        except Exception as error:  # keep going: one device session should return every part it can
            result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = time.perf_counter() - started
        self.report["parts"][name] = result
        self.save()
        outcome = "ok" if result["ok"] else "FAILED: " + result.get("error", "see the JSON")
        say(f"[{self.elapsed():6.1f} s] {name}: {outcome} in {result['seconds']:.1f} s")
        return result
