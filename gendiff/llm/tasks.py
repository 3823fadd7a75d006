"""A tiny language model trained offline on a verifiable task, for LLM RL experiments and tests.

1. Tokenizer: a ``tokenizers`` BPE trained in-process on the task's text. With ``vocab_size`` equal to
   the alphabet plus the specials it learns no merges, i.e. it is char-level (the default); larger sizes
   (e.g. 300) add BPE merges. Wrapped in ``PreTrainedTokenizerFast(padding_side="left")`` with our own
   ``<bos>`` / ``<eos>`` / ``<pad>`` ids; encoding prepends ``<bos>``.
2. Model: a small ``LlamaForCausalLM`` (default 4 layers, hidden 128), or a ``Qwen2ForCausalLM`` /
   ``GPT2LMHeadModel`` of the same size (``arch``).
3. SFT: next-token cross-entropy on ``<bos>prompt answer<eos>``, loss on the answer and ``<eos>`` only,
   left-padded batches with position ids counted from the first real token (as the sampler does).
4. Task: multi-digit arithmetic, "12+345=" -> "357", with an exact-match reward (optional partial credit).
   ``templates=K`` (prompt augmentation, ``gendiff.llm.templates``): each problem is stated in one of K prompt
   templates drawn uniformly, and the reward reads the answer in that template's format.

``build_tiny_lm`` runs 1-3 and saves model and tokenizer with ``save_pretrained``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from .sampling import sample_completions
from .templates import TEMPLATES, check_templates, match_template

SPECIALS = ("<pad>", "<bos>", "<eos>")
_PROMPT_RE = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*$")


@dataclass
class ArithmeticTask:
    """Random "a<op>b=" prompts; a has ``digits_a`` digits, b ``digits_b`` (leading digit non-zero).

    Attributes:
        digits_a: digits of the first operand (2).
        digits_b: digits of the second operand (2).
        ops: operators drawn uniformly, among "+", "-", "*".
        templates: K, the first K prompt templates of ``gendiff.llm.templates`` (1: plain "a+b=" only); with K > 1
            each prompt's template is drawn uniformly.
    """

    digits_a: int = 2
    digits_b: int = 2
    ops: tuple[str, ...] = ("+",)
    templates: int = 1

    def __post_init__(self) -> None:
        if self.digits_a < 1 or self.digits_b < 1:
            raise ValueError(f"digits must be >= 1, got {self.digits_a}, {self.digits_b}")
        bad = [o for o in self.ops if o not in "+-*" or len(o) != 1]
        if not self.ops or bad:
            raise ValueError(f"ops must be a non-empty subset of '+', '-', '*', got {self.ops}")
        check_templates(self.templates, self.ops)

    def _operand(self, rng: random.Random, digits: int) -> int:
        return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

    def sample(self, n: int, rng: random.Random, exclude: Collection[str] = ()) -> tuple[list[str], list[str]]:
        """``n`` prompts like "12+34=" and their completions like "46" (in the drawn template's format); a problem
        whose plain prompt "a+b=" is in ``exclude`` (held-out problems) is drawn again, whatever its template."""
        prompts, answers = [], []
        while len(prompts) < n:
            a, b = self._operand(rng, self.digits_a), self._operand(rng, self.digits_b)
            op = rng.choice(self.ops)
            if f"{a}{op}{b}=" in exclude:
                continue
            t = TEMPLATES[rng.randrange(self.templates)] if self.templates > 1 else TEMPLATES[0]
            prompts.append(t.prompt(a, op, b))
            answers.append(t.render(a, op, b))
        return prompts, answers

    def n_problems(self) -> int:
        """How many distinct prompts the task can draw."""
        def count(d: int) -> int:
            return 10**d - (10 ** (d - 1) if d > 1 else 0)

        return count(self.digits_a) * count(self.digits_b) * len(set(self.ops))

    def heldout(self, n: int, seed: int = 1234) -> list[str]:
        """``n`` distinct prompts (in draw order) from ``random.Random(seed)``: the evaluation problems
        that SFT and RL exclude with ``sample(..., exclude=...)``."""
        if not 0 < n <= self.n_problems() // 2:
            raise ValueError(f"held-out size must be in [1, {self.n_problems() // 2}] (half the "
                             f"{self.n_problems()} problems), got {n}")
        rng, seen, plain = random.Random(seed), {}, self.plain()
        while len(seen) < n:
            seen.setdefault(plain.sample(1, rng)[0][0], None)
        return list(seen)

    def plain(self) -> ArithmeticTask:
        """The same problems in the plain "a+b=" template only (held-out sets and greedy accuracy use it)."""
        return ArithmeticTask(self.digits_a, self.digits_b, self.ops)

    def prompt_source(self, exclude: Collection[str] = ()) -> Callable[[int, random.Random], list[str]]:
        """``fn(n, rng) -> prompts`` for ``LLMTrainer``, never drawing a prompt in ``exclude``."""
        held = frozenset(exclude)
        return lambda n, rng: self.sample(n, rng, held)[0]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Text for the tokenizer: ``n`` full "a+b=c" lines."""
        prompts, answers = self.sample(n, random.Random(seed))
        return [p + a for p, a in zip(prompts, answers, strict=True)]


def solve(prompt: str) -> str:
    """The exact answer to an arithmetic prompt "a<op>b=" or a templated one ("rev a+b=", ...; ValueError for
    anything else), as ``str(value)`` whatever the template's answer format."""
    match = _PROMPT_RE.match(prompt)
    if match is None:
        a, op, b = match_template(prompt)[1]
    else:
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    return str(a + b if op == "+" else a - b if op == "-" else a * b)


def digit_credit(pred: str, answer: str) -> float:
    """Partial credit: right-aligned matching characters / max(len(pred), len(answer)); 1 iff equal."""
    if pred == answer:
        return 1.0
    n = max(len(pred), len(answer))
    if n == 0:
        return 0.0
    hits = sum(p == a for p, a in zip(reversed(pred), reversed(answer), strict=False))
    return hits / n


def arithmetic_reward(
    prompts: list[str], completions: list[str], partial_credit: bool = False, **_: object
) -> list[float]:
    """Verifiable reward: 1.0 when the stripped completion equals the answer, else 0.0 (or
    ``digit_credit`` * 0.5 with ``partial_credit``, so that an exact answer always scores highest). A templated
    prompt ("rev a+b=", ...) is scored on the answer its template's format gives (``gendiff.llm.templates``);
    a completion that is not well-formed in it gets 0, also with ``partial_credit``.

    Args:
        prompts: [B] prompts "a<op>b=" (or of another template).
        completions: [B] decoded completions (special tokens removed).

    Returns:
        [B] rewards in [0, 1].
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    out = []
    for p, c in zip(prompts, completions, strict=True):
        ans = solve(p)
        pred = c.strip() if _PROMPT_RE.match(p) is not None else match_template(p)[0].extract(c)
        if pred is None:  # not well-formed in its template's format: no credit
            out.append(0.0)
        elif pred == ans:
            out.append(1.0)
        else:
            out.append(0.5 * digit_credit(pred, ans) if partial_credit else 0.0)
    return out


def arithmetic_answer_key(prompts: list[str], completions: list[str]) -> list[str]:
    """Answer-equivalence classes (EMPO's semantic clusters): the integer a completion spells
    ("046" and "46" agree), or its stripped text when it is not an integer."""
    keys = []
    for c in completions:
        text = c.strip()
        keys.append(str(int(text)) if re.fullmatch(r"-?\d+", text) else text)
    return keys


def train_tokenizer(corpus: list[str], vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on ``corpus`` (char-level when ``vocab_size`` is None).

    Returns:
        ``PreTrainedTokenizerFast`` with left padding; encoding adds ``<bos>``, decoding fuses pieces.
    """
    alphabet = sorted(set("".join(corpus)))
    size = len(alphabet) + len(SPECIALS) if vocab_size is None else vocab_size
    if size < len(alphabet) + len(SPECIALS):
        raise ValueError(f"vocab_size {size} is below the alphabet ({len(alphabet)}) plus {len(SPECIALS)} specials")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=list(SPECIALS), initial_alphabet=alphabet,
                                  min_frequency=1, show_progress=False, limit_alphabet=len(alphabet))
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", padding_side="left")


ARCHITECTURES = ("llama", "qwen2", "gpt2")


def build_model(tokenizer: PreTrainedTokenizerFast, layers: int = 4, hidden: int = 128, heads: int = 4,
                context: int = 64, vocab_size: int | None = None, seed: int = 0,
                arch: Literal["llama", "qwen2", "gpt2"] = "llama") -> PreTrainedModel:
    """A small causal LM with the tokenizer's special ids; ``vocab_size`` defaults to ``len(tokenizer)``.

    ``arch``: "llama" (``LlamaForCausalLM``) and "qwen2" (``Qwen2ForCausalLM``, q/k/v biases, 2 kv heads)
    run on ``FastDecoder``; "gpt2" (``GPT2LMHeadModel``, learned positions, LayerNorm, GELU) runs on the
    generic Hugging Face path.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; valid: {list(ARCHITECTURES)}")
    torch.manual_seed(seed)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "vocab_size": vocab_size or len(tokenizer)}
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context,
                                          n_inner=2 * hidden, tie_word_embeddings=False, **ids))
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    kv_heads = heads if arch == "llama" else max(1, heads // 2)
    return model_cls(config_cls(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, num_key_value_heads=kv_heads,
                                max_position_embeddings=context, tie_word_embeddings=False, **ids))


def sft_batch(tokenizer: PreTrainedTokenizerFast, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded ``<bos>prompt answer<eos>`` batch with labels on answer + ``<eos>`` only (-100 elsewhere)."""
    rows, labels = [], []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = tokenizer(p)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p_ids + a_ids)
        labels.append([-100] * len(p_ids) + a_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    lab = torch.tensor([[-100] * (width - len(r)) + r for r in labels])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0),
            "labels": lab}


def sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: ArithmeticTask, steps: int,
        batch_size: int = 64, lr: float = 3e-3, seed: int = 0, exclude: Collection[str] = ()) -> list[float]:
    """Supervised fine-tuning on fresh task samples each step (AdamW, cosine decay), never on a prompt in
    ``exclude``. Returns the losses."""
    rng, exclude = random.Random(seed), frozenset(exclude)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    if steps >= 3:  # a warm-up of >= 2 steps: OneCycleLR divides by zero when pct_start * steps == 1 (10 steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    model.train()
    losses = []
    for _ in range(steps):
        batch = sft_batch(tokenizer, *task.sample(batch_size, rng, exclude))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model, tokenizer, task: ArithmeticTask, n: int = 200, seed: int = 1234) -> float:
    """Greedy exact-match accuracy on ``n`` fresh plain "a+b=" prompts."""
    prompts, _ = task.plain().sample(n, random.Random(seed))
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    out = sample_completions(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=8,
                             eos_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
                             greedy=True)
    texts = tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
    return sum(arithmetic_reward(prompts, texts)) / n


@dataclass
class TinyLM:
    """Output of ``build_tiny_lm``: the model, its tokenizer, the save folder and greedy accuracy."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    path: Path | None
    accuracy: float
    sft_losses: list[float]


def build_tiny_lm(task: Literal["arithmetic"] | ArithmeticTask = "arithmetic", seed: int = 0, sft_steps: int = 300,
                  out_dir: str | Path | None = None, layers: int = 4, hidden: int = 128,
                  vocab_size: int | None = None, batch_size: int = 112, lr: float = 3e-3,
                  exclude: Collection[str] = (), arch: Literal["llama", "qwen2", "gpt2"] = "llama") -> TinyLM:
    """Train the tokenizer, build the Llama, SFT it, measure greedy accuracy, save with save_pretrained.

    Args:
        task: "arithmetic" (2+2-digit addition) or an ``ArithmeticTask``.
        seed: seeds the tokenizer corpus, the initial weights and the SFT data.
        sft_steps: SFT steps (0: an untrained model).
        out_dir: where model and tokenizer are saved (None: not saved).
        layers, hidden: model size.
        vocab_size: tokenizer size (None: char-level); the model uses the tokenizer's size.
        batch_size, lr: SFT settings.
        exclude: prompts SFT never trains on (held-out problems, ``ArithmeticTask.heldout``).
        arch: the architecture (``build_model``).
    """
    if isinstance(task, str):
        if task != "arithmetic":
            raise ValueError(f"unknown task {task!r}; valid: ['arithmetic']")
        task = ArithmeticTask()
    tokenizer = train_tokenizer(task.corpus(seed=seed), vocab_size)
    model = build_model(tokenizer, layers=layers, hidden=hidden, seed=seed, arch=arch)
    losses = (sft(model, tokenizer, task, sft_steps, batch_size=batch_size, lr=lr, seed=seed, exclude=exclude)
              if sft_steps else [])
    model.eval()
    acc = accuracy(model, tokenizer, task)
    path = None
    if out_dir is not None:
        path = Path(out_dir)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return TinyLM(model=model, tokenizer=tokenizer, path=path, accuracy=acc, sft_losses=losses)
