"""configs/accelerate/*.yaml (DeepSpeed ZeRO-2, FSDP) parse and name only fields accelerate knows.

They cannot run here (no GPU; deepspeed is not installed): accelerate's own loader builds its ClusterConfig
from each file (an unknown top-level field is a ValueError) and every deepspeed_config / fsdp_config key must be
an ``accelerate launch`` option, which is how accelerate applies them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name, kind, section", [("llm_zero2.yaml", "DEEPSPEED", "deepspeed_config"),
                                                 ("llm_fsdp.yaml", "FSDP", "fsdp_config")])
def test_accelerate_config_is_valid(name, kind, section):
    path = CONFIGS / name
    raw = yaml.safe_load(path.read_text())
    cfg = load_config_from_file(str(path))
    assert str(cfg.distributed_type).endswith(kind) and cfg.num_processes == raw["num_processes"]
    launch_options = {a.dest for a in launch_command_parser()._actions}
    unknown = set(raw[section]) - launch_options
    assert not unknown, f"{name}: {section} keys accelerate launch does not know: {sorted(unknown)}"
    if kind == "DEEPSPEED":
        assert raw[section]["zero_stage"] == 2
    else:
        assert raw[section]["fsdp_version"] == 2
