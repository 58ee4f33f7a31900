"""The two systems the GR benchmark compares grserve against, behind one blocking interface (`BeamBaseline`):

- `HFBeamSearch`: transformers `generate` beam search with the trie as `prefix_allowed_tokens_fn`, the way
  TIGER-style codebases decode semantic IDs;
- `VLLMBeamSearch`: vLLM CPU's `LLM.beam_search`, unconstrained (it has no usable item restriction, see
  docs/baselines.md, "What vLLM cannot do"), in its own venv behind `vllm_worker.py`.

Both answer in SID codes, not tokens. A beam that left the item space is kept, with -1 at each position whose
token is not of that position's level, so that the benchmark can report the invalid share."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Protocol

import torch

from grserve.engine.compute_threads import run_compute
from grserve.items.item_table import ItemTable
from grserve.items.synthetic import write_tokenizer
from grserve.items.trie import SIDTrie
from grserve.items.vocab import PAD, GRVocab

SID = tuple[int, ...]
Ranking = list[tuple[SID, float]]  # one prompt's top SIDs with their summed log-probs, best first

WORKER = Path(__file__).with_name("vllm_worker.py")
# The widest beam the benchmark sweeps (docs/design.md, "The GR workload": W = 128…512): vLLM asks 2W
# log-probs per step.
MAX_BEAM_WIDTH = 512
READY_TIMEOUT_S = 180.0
STDERR_TAIL_BYTES = 8000


class BeamBaseline(Protocol):
    name: str

    def start(self) -> None: ...

    def rank(self, prompts: list[list[int]], beam_width: int, top_n: int) -> list[Ranking]: ...

    def close(self) -> None: ...


def sid_of(tokens: list[int], vocab: GRVocab) -> SID:
    """Codes of the generated tokens, level by level; -1 where a token is not of its level (or is missing)."""
    codes = [t - vocab.offset(level) for level, t in enumerate(tokens[: vocab.levels])]
    codes += [-1] * (vocab.levels - len(codes))
    return tuple(c if 0 <= c < vocab.codebook_size else -1 for c in codes)


class HFBeamSearch:
    """transformers beam search: the prompt is expanded to W rows before prefill, and the trie is a Python
    callback per beam per step. It computes on the compute thread, as grserve's engines do: on a thread of
    its own its idle OpenMP team would slow theirs (`engine/compute_threads.py`)."""

    def __init__(self, model_dir: str | Path, name: str = "hf", constrained: bool = True):
        self.model_dir = Path(model_dir)
        self.name = name
        self.constrained = constrained
        self.model: torch.nn.Module | None = None

    def start(self) -> None:
        # Imported here: transformers takes seconds to import, and only this baseline needs it.
        from transformers import AutoModelForCausalLM

        table = ItemTable.load(self.model_dir)
        self.vocab = GRVocab.of(table)
        self.trie = SIDTrie.from_table(table)
        self._allowed: dict[tuple[int, ...], list[int]] = {}
        # sdpa, transformers' default: what a codebase that does not choose gets (and on ml-100k at W=128 it was
        # 0.65-0.87 s per request against eager's 0.94-1.22 s).
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()

    def close(self) -> None:
        self.model = None

    def rank(self, prompts: list[list[int]], beam_width: int, top_n: int) -> list[Ranking]:
        """All prompts in one `generate`, left-padded to the longest (as a serving wrapper batches them):
        every generated suffix then starts at the same column."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: call start() first")
        return run_compute(self._rank, prompts, beam_width, top_n)

    @torch.no_grad()
    def _rank(self, prompts: list[list[int]], beam_width: int, top_n: int) -> list[Ranking]:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        out = self.model.generate(
            ids, attention_mask=mask, num_beams=beam_width, num_return_sequences=top_n,
            max_new_tokens=self.vocab.levels, min_new_tokens=self.vocab.levels, do_sample=False,
            early_stopping=True, length_penalty=0.0, pad_token_id=PAD, output_scores=True,
            return_dict_in_generate=True,
            prefix_allowed_tokens_fn=(lambda _, seq: self._allowed_tokens(seq[width:]))
            if self.constrained else None)
        # With length_penalty 0 the sequence score is the plain sum of the generated tokens' log-probs.
        ranked = [(sid_of(tokens, self.vocab), score) for tokens, score in
                  zip(out.sequences[:, width:].tolist(), out.sequences_scores.tolist())]
        return [ranked[i * top_n:(i + 1) * top_n] for i in range(len(prompts))]

    def _allowed_tokens(self, generated: torch.Tensor) -> list[int]:
        """Tokens of the trie children of the generated prefix; memoized, as TIGER-style code does."""
        key = tuple(generated.tolist())
        if key not in self._allowed:
            level = len(key)
            prefix = tuple(t - self.vocab.offset(l) for l, t in enumerate(key))
            tokens = (self.trie.children(prefix) + self.vocab.offset(level)).tolist()
            # Beams off the trie exist only at -inf score, when W exceeds the valid prefixes; transformers
            # rejects an empty list, so they may only go on with <pad> (and stay at -inf).
            self._allowed[key] = tokens or [PAD]
        return self._allowed[key]


class VLLMBeamSearch:
    """vLLM CPU `LLM.beam_search` in a worker process of the vLLM venv, spoken to in JSON lines."""

    def __init__(self, model_dir: str | Path, python: str = ".venv-bench/bin/python", name: str = "vllm",
                 max_logprobs: int | None = None, dtype: str = "float32"):
        self.model_dir, self.dtype = Path(model_dir), dtype
        self.python = python
        self.name = name
        self.max_logprobs = max_logprobs or 2 * MAX_BEAM_WIDTH
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None

    def start(self) -> None:
        if not Path(self.python).exists():
            raise FileNotFoundError(f"{self.python} not found: `make bench-env` installs vLLM's venv")
        self.vocab = GRVocab.of(ItemTable.load(self.model_dir))
        if not (self.model_dir / "tokenizer.json").exists():
            # vLLM's beam search detokenizes, so it refuses to run without a tokenizer.
            write_tokenizer(self.model_dir, self.vocab)
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        # vLLM's default binding leaves its worker a single core (docs/baselines.md, "Known pitfalls"): give
        # it all of them.
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}")
        # A file, not a pipe: vLLM logs a lot, and a full pipe nobody reads would stall the worker.
        self._stderr = tempfile.TemporaryFile()
        # Own session, so close() can end the worker together with the engine process vLLM spawns.
        self._proc = subprocess.Popen(
            [self.python, str(WORKER), str(self.model_dir), "--max-logprobs", str(self.max_logprobs),
             "--dtype", self.dtype],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True,
            start_new_session=True)
        try:
            ready = self._receive(timeout=READY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"{self.name}: unexpected first line from the vLLM worker: {ready}")

    def generate(self, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], float]:
        """Greedy continuations of `max_tokens` (ignoring EOS) and the seconds vLLM took, timed in the worker."""
        self._send({"generate": {"prompts": prompts, "max_tokens": max_tokens}})
        reply = self._receive(timeout=None)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: the vLLM worker failed: {reply['error']}; its stderr ends with:\n"
                               f"{self._stderr_tail()}")
        return reply["outputs"], reply["seconds"]

    def rank(self, prompts: list[list[int]], beam_width: int, top_n: int) -> list[Ranking]:
        if 2 * beam_width > self.max_logprobs:
            raise ValueError(f"beam_width {beam_width} needs max_logprobs >= {2 * beam_width}, "
                             f"the worker was started with {self.max_logprobs}")
        self._send({"prompts": prompts, "beam_width": beam_width, "top_n": top_n})
        reply = self._receive(timeout=None)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: the vLLM worker failed the request: {reply['error']}; its "
                               f"stderr ends with:\n{self._stderr_tail()}")
        return [[(sid_of(tokens, self.vocab), score) for tokens, score in beams] for beams in reply["results"]]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stdin.close()  # EOF: the worker shuts vLLM down and exits
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _send(self, message: dict) -> None:
        if self._proc is None:
            raise RuntimeError(f"{self.name}: call start() first")
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(self._died()) from None

    def _receive(self, timeout: float | None) -> dict:
        # select() on the buffered pipe is sound here: the worker writes exactly one line per request, so
        # after each readline nothing is left in Python's buffer that select could not see.
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.name}: no answer from the vLLM worker in {timeout:.0f} s; its stderr "
                               f"ends with:\n{self._stderr_tail()}")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(self._died())
        return json.loads(line)

    def _died(self) -> str:
        code = self._proc.wait(timeout=30)
        return (f"{self.name}: the vLLM worker exited with code {code}; its stderr ends with:\n"
                f"{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        return self._stderr.read().decode(errors="replace")
