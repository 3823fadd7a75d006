"""gendiff.llm.templates and ArithmeticTask(templates=K): each template's prompt is parsed back and its completion
scored by the reward; held-out problems stay out in every template; the plain task is unchanged; bad input."""

from __future__ import annotations

import random

import pytest

from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, solve, train_tokenizer
from gendiff.llm.templates import TEMPLATES, check_templates, match_template, template_answer


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_each_template_is_parsed_back_and_scored_by_the_reward(template):
    rng = random.Random(5)
    for _ in range(50):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        prompt, completion = template.prompt(a, "+", b), template.render(a, "+", b)
        assert match_template(prompt) == (template, (a, "+", b))
        assert solve(prompt) == str(a + b)
        assert template_answer(prompt, completion) == str(a + b)
        assert arithmetic_reward([prompt], [completion]) == [1.0]
        wrong = template.render(a, "+", b + 1)
        assert arithmetic_reward([prompt], [wrong]) == [0.0]


def test_known_renderings_and_malformed_completions():
    assert [t.prompt(57, "+", 68) for t in TEMPLATES] == ["57+68=", "rev 57+68=", "sum 57+68=", "ans 57+68:"]
    assert [t.render(57, "+", 68) for t in TEMPLATES] == ["125", "521", "5c1 2c1 125", "[125]"]
    assert TEMPLATES[1].render(3, "-", 50) == "-74" and TEMPLATES[1].extract("-74") == "-47"
    assert TEMPLATES[2].render(0, "+", 0) == "0c0 0"
    # the right number in the wrong format earns nothing: the reward parses each template's format
    prompts = ["sum 57+68=", "ans 57+68:", "rev 57+68="]
    assert arithmetic_reward(prompts, ["125", "125", "125"]) == [0.0, 0.0, 0.0]
    assert arithmetic_reward(prompts, ["125", "125", "125"], partial_credit=True)[:2] == [0.0, 0.0]
    assert arithmetic_reward(["57+68="], [" 125 "]) == [1.0]  # the plain task as it was


def test_templated_task_mixes_templates_and_keeps_held_out_problems_out():
    plain = ArithmeticTask()
    held = plain.heldout(400)
    task = ArithmeticTask(templates=4)
    assert task.heldout(400) == held  # held-out sets are plain prompts whatever K
    prompts, completions = task.sample(2000, random.Random(0), exclude=held)
    names = {match_template(p)[0].name for p in prompts}
    assert names == {"plain", "reverse", "trace", "tagged"}
    problems = {"{}{}{}=".format(*match_template(p)[1]) for p in prompts}
    assert not problems & set(held)
    assert arithmetic_reward(prompts, completions) == [1.0] * len(prompts)
    # K = 1 draws exactly the problems it always drew (no extra random numbers)
    assert ArithmeticTask(templates=1).sample(20, random.Random(3)) == plain.sample(20, random.Random(3))
    assert ArithmeticTask(templates=2).sample(5, random.Random(3))[0] != plain.sample(5, random.Random(3))[0]


def test_a_templated_corpus_gives_the_tokenizer_every_template_character():
    tok = train_tokenizer(ArithmeticTask(templates=4).corpus(300))
    for t in TEMPLATES:
        p = t.prompt(12, "+", 39) + t.render(12, "+", 39)
        assert tok.decode(tok(p)["input_ids"], skip_special_tokens=True) == p


def test_bad_templates_raise_with_the_value():
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ValueError, match=r"prompt templates must be an integer in \[1, 4\]"):
            check_templates(bad)
    with pytest.raises(ValueError, match="'trace'"):
        ArithmeticTask(ops=("+", "-"), templates=3)
    ArithmeticTask(ops=("+", "-"), templates=2)  # plain and reverse write any op
    with pytest.raises(ValueError, match="not an arithmetic prompt of any template"):
        solve("add 1 and 2")
    with pytest.raises(ValueError, match="addition"):
        TEMPLATES[2].render(5, "*", 3)


def test_cli_train_with_prompt_templates_and_spear(tmp_path):
    import argparse

    from gendiff.llm.cli import add_llm_commands
    from gendiff.llm.tasks import build_tiny_lm

    parser = argparse.ArgumentParser()
    add_llm_commands(parser.add_subparsers(dest="command"))
    common = ["--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens", "12",
              "--eval-prompts", "4", "--no-progress", "--seed", "0"]
    argv = ["llm", "train", "--out", str(tmp_path / "run"), "--sft-steps", "2", "--prompt-templates", "3",
            "--spear", "--spear-config", "{sil_ramp_steps: 0, replay_batch: 2}", *common]
    summary = parser.parse_args(argv)._run(parser.parse_args(argv))
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    assert '"prompt_templates": 3' in (tmp_path / "run" / "run_args.json").read_text()
    assert "spear/intrinsic_weight" in (tmp_path / "run" / "log.jsonl").read_text()
    plain = tmp_path / "plain"  # a model whose tokenizer never saw the templates: one clear error
    build_tiny_lm(sft_steps=0, out_dir=plain, layers=1, hidden=32)
    bad = ["llm", "train", "--out", str(tmp_path / "bad"), "--model", str(plain), "--prompt-templates", "2", *common]
    with pytest.raises(ValueError, match="cannot spell template 'reverse'"):
        parser.parse_args(bad)._run(parser.parse_args(bad))
    with pytest.raises(ValueError, match=r"integer in \[1, 4\].*got 7"):
        worse = ["llm", "train", "--out", str(tmp_path / "x"), "--prompt-templates", "7", *common]
        parser.parse_args(worse)._run(parser.parse_args(worse))
