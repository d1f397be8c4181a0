"""The vLLM environment's install plan (tools/localcluster/vllmenv.py), without installing anything."""

from __future__ import annotations

from localcluster import vllmenv


def test_the_requirements_drop_the_torch_pin_what_a_text_server_never_imports_and_other_platforms():
    requires = ["regex", "transformers<5.20.0,>=5.16.1",
                'torch==2.13.0+cpu; platform_machine == "x86_64"', 'torch==2.13.0; platform_system == "Darwin"',
                'torchaudio; platform_machine != "s390x"', "torchvision; platform_machine != 'riscv64'",
                'protobuf==7.36.1; platform_machine == "s390x"', 'six>=1.16.0; python_version > "3.11"',
                "pytest; extra == 'test'"]
    assert vllmenv.requirements(requires) == ["regex", "transformers<5.20.0,>=5.16.1",
                                              'torchvision; platform_machine != "riscv64"']


def test_flags_are_read_from_help_text():
    text = "  --max-lora-rank MAX_LORA_RANK\n  --enable-lora, --no-enable-lora  Enable LoRA.\n  see x--y"
    assert vllmenv.flags_in(text) == {"--max-lora-rank", "--enable-lora", "--no-enable-lora"}
