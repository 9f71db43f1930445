"""A Ctrl-C during the entry point's imports is held to their end and then raised (`errors.interrupts_held`):
megatron.core wraps optional imports in a bare `except:`, which would otherwise swallow it.

Each case runs in a fresh interpreter with Python's own SIGINT handler, as a command started from a
terminal has: a suite started in the background inherits an ignored SIGINT, which the case sets back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A Ctrl-C that strikes inside a `try` whose bare `except:` takes everything, as an optional import's does.
SWALLOWING_BLOCK = """
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    except:  # noqa: E722
        print("swallowed")
    print("block ended")
"""


def _run(body: str) -> list[str]:
    script = ("import os, signal, time\nfrom megatron_acodm.errors import interrupts_held\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n" + textwrap.dedent(body))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines()


def test_without_holding_a_bare_except_swallows_the_ctrl_c():
    assert _run(SWALLOWING_BLOCK) == ["swallowed", "block ended"]


def test_a_held_ctrl_c_is_raised_once_the_block_ends_and_the_handler_is_restored():
    body = (
        "try:\n    with interrupts_held():\n" + textwrap.indent(textwrap.dedent(SWALLOWING_BLOCK), "        ")
        + "except KeyboardInterrupt:\n    print('raised after the block')\n"
        + "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    assert _run(body) == ["block ended", "raised after the block", "True"]


def test_a_block_without_ctrl_c_raises_nothing():
    assert _run("with interrupts_held():\n    print('inside')\nprint('after')\n") == ["inside", "after"]


def test_an_ignored_sigint_stays_ignored():
    body = (
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwith interrupts_held():\n"
        + textwrap.indent(textwrap.dedent(SWALLOWING_BLOCK), "    ")
        + "print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)\n"
    )
    assert _run(body) == ["block ended", "True"]


def test_off_the_main_thread_nothing_is_held():
    body = (
        "import threading\nfailures = []\n"
        "def block():\n    try:\n        with interrupts_held():\n            print('inside')\n"
        "    except Exception as error:\n        failures.append(error)\n"
        "thread = threading.Thread(target=block)\nthread.start()\nthread.join()\nprint(failures)\n"
    )
    assert _run(body) == ["inside", "[]"]
